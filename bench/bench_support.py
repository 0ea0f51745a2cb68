"""What several benchmarks share: ports for their own servers, and one JSON object on stdout."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable
from typing import Any


def free_port_range(width: int, start: int) -> int:
    """A base port with `width` free ports from it (the Serve replicas' direct ports)."""
    for base in range(start, 60_000, width):
        free = True
        for port in range(base, base + width):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    free = False
                    break
        if free:
            return base
    raise RuntimeError("no free port range for the replicas' direct ports")


def print_json_only(produce: Callable[[], dict[str, Any]]) -> None:
    """Runs `produce` with fd 1 pointed at stderr (Ray, Serve and child processes write to it too), then
    writes its result alone, as one JSON line, to the real stdout."""
    sys.stdout.flush()
    result_fd = os.dup(1)
    os.dup2(2, 1)
    result = produce()
    os.write(result_fd, (json.dumps(result) + "\n").encode())
