"""Ports for the benchmarks' own servers, shared by bench/gateway.py and bench/chat.py."""

from __future__ import annotations

import socket


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
