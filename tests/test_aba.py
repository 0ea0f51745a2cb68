"""The ABA routing-number checksum."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brokerage.aba import is_valid_routing_number

VALID = ["121000358", "123103716", "021000021", "111000025", "011000015", "026009593", "121000248", "322271627"]


@pytest.mark.parametrize("number", VALID)
def test_published_routing_numbers_pass(number: str) -> None:
    assert is_valid_routing_number(number)


@pytest.mark.parametrize(
    "number",
    ["123456789", "121000359", "12100035", "1210003580", "", "12100035a", "000000000", "١٢١٠٠٠٣٥٨", " 21000358"],
)
def test_malformed_or_wrong_numbers_fail(number: str) -> None:
    assert not is_valid_routing_number(number)


@given(st.text(alphabet="0123456789", min_size=8, max_size=8))
def test_exactly_one_check_digit_completes_any_eight_digits(prefix: str) -> None:
    completions = [d for d in "0123456789" if is_valid_routing_number(prefix + d)]
    assert len(completions) == (0 if prefix == "00000000" else 1)


@given(st.sampled_from(VALID), st.integers(0, 8), st.integers(1, 9))
def test_changing_one_digit_breaks_the_checksum(number: str, position: int, delta: int) -> None:
    digit = (int(number[position]) + delta) % 10
    assert not is_valid_routing_number(number[:position] + str(digit) + number[position + 1 :])
