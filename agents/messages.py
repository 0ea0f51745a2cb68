"""Where a turn begins in a conversation: shared by the graph (tool rounds) and the offline model."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.messages import BaseMessage, HumanMessage


def turn_start(messages: Sequence[BaseMessage]) -> int:
    """Index just after the person's latest message: where this turn's messages begin."""
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], HumanMessage):
            return i + 1
    return 0
