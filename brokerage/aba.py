"""ABA routing numbers: the checksum every US bank routing number carries.

Checking it locally turns a typo into a clear 422 before anything is stored or sent to a bank.
"""

from __future__ import annotations

_WEIGHTS = (3, 7, 1, 3, 7, 1, 3, 7, 1)


def is_valid_routing_number(value: str) -> bool:
    """Nine ASCII digits whose weighted sum 3-7-1 is a multiple of ten (and not all zeros)."""
    if len(value) != 9 or not value.isascii() or not value.isdigit():
        return False
    if value == "000000000":
        return False
    return sum(w * int(d) for w, d in zip(_WEIGHTS, value, strict=True)) % 10 == 0
