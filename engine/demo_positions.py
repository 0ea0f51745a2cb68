"""Demo accounts from a JSON file: the position source of `make demo` (CLERA_POSITIONS=file).

The file is a list of `engine.types.AccountHoldings` in JSON (money as strings). It is read again on
every load, so editing it and announcing the ids on `holdings:changed` moves the live values.
Holdings without a `session` are taken as held since before the current trading day.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from importlib import resources
from pathlib import Path

import msgspec

from engine.types import AccountHoldings, holdings_json_decoder


class PositionFileError(ValueError):
    """The demo accounts file is missing or is not a list of account holdings."""


def packaged_demo_file() -> Path:
    return Path(str(resources.files("engine.data").joinpath("demo_accounts.json")))


class FilePositionSource:
    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else packaged_demo_file()

    def load_all(self, keep: Callable[[str], bool] | None = None) -> list[AccountHoldings]:
        try:
            accounts = holdings_json_decoder.decode(self.path.read_bytes())
        except OSError as exc:
            raise PositionFileError(f"{self.path}: cannot read demo accounts ({exc.strerror})") from None
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise PositionFileError(f"{self.path}: not a list of account holdings: {exc}") from None
        ids = [a.account_id for a in accounts]
        if len(set(ids)) != len(ids):
            raise PositionFileError(f"{self.path}: an account id appears twice")
        for account in accounts:
            symbols = [p.symbol for p in account.positions]
            if len(set(symbols)) != len(symbols):
                raise PositionFileError(f"{self.path}: {account.account_id} lists a symbol twice")
        return accounts if keep is None else [a for a in accounts if keep(a.account_id)]

    def load(self, account_ids: Collection[str]) -> list[AccountHoldings]:
        wanted = set(account_ids)
        return [a for a in self.load_all() if a.account_id in wanted]
