"""A tool is a plain function `(deps, account_id, **args) -> dict` plus the schema a model is shown.

The schema is generated from the function's own signature (minus the two context parameters), so
what a model may send and what the code accepts cannot drift apart; arguments are validated by that
schema before the function runs. The account is never an argument: it comes from the thread.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, get_type_hints

from langchain_core.tools import BaseTool, StructuredTool
from pydantic import ValidationError, create_model

from agents.deps import AgentDeps
from engine.wire import positional, wire_data

ToolFn = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class ToolSpec:
    name: str
    agent: str
    fn: ToolFn
    schema: BaseTool

    def run(self, deps: AgentDeps, account_id: str, args: dict[str, Any]) -> dict[str, Any]:
        """Validated arguments in, JSON data out; bad arguments come back as an error the model can read."""
        model: Any = self.schema.args_schema
        optional = {name for name, info in model.model_fields.items() if not info.is_required()}
        # null for an optional argument is a model's way of saying "not given" (the seed's lesson, seen
        # from the other side): the default applies
        given = {k: v for k, v in (args or {}).items() if not (v is None and k in optional)}
        try:
            parsed = model.model_validate(given)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'args'}: {e['msg']}" for e in exc.errors())
            return {"error": f"invalid arguments for {self.name}: {problems}"}
        return self.fn(deps, account_id, **parsed.model_dump())


REGISTRY: dict[str, ToolSpec] = {}


def agent_tool(agent: str) -> Callable[[ToolFn], ToolFn]:
    """Registers `fn` as a tool of `agent`; its docstring is the description the model reads."""

    def register(fn: ToolFn) -> ToolFn:
        params = list(inspect.signature(fn).parameters.values())[2:]  # after (deps, account_id)
        hints = get_type_hints(fn)
        fields: dict[str, Any] = {
            p.name: (hints.get(p.name, str), ... if p.default is inspect.Parameter.empty else p.default)
            for p in params
        }
        model = create_model(f"{fn.__name__}_args", **fields)
        schema = StructuredTool.from_function(
            func=lambda **_: None, name=fn.__name__, description=inspect.cleandoc(fn.__doc__ or fn.__name__),
            args_schema=model,
        )
        REGISTRY[fn.__name__] = ToolSpec(fn.__name__, agent, fn, schema)
        return fn

    return register


def plain(value: Decimal) -> str:
    """A decimal in positional notation (never `3E+2`), as Alpaca's wire format writes numbers."""
    text = positional(value)
    return text.rstrip("0").rstrip(".") if "." in text else text


def as_data(obj: Any) -> Any:
    """A Struct (a broker's order) as JSON data, its decimals in positional notation."""
    return wire_data(obj, plain)


def money(value: Decimal) -> str:
    return format(value.quantize(Decimal("0.01")), "f")


def pct(fraction: float | None) -> str | None:
    """A fraction as a percentage string with two decimals (0.1234 -> "12.34"); None when undefined."""
    return None if fraction is None else f"{fraction * 100:.2f}"


def ratio(value: float | None) -> str | None:
    """A ratio (beta, Sharpe) with two decimals; None when undefined (a flat series has no Sharpe)."""
    return None if value is None else f"{value:.2f}"
