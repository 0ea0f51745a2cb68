"""The `clera` command, one module per command (`cli.py` parses the arguments and loads the one asked
for). `serve` and `status` are the only ones that import Ray."""

from rich.console import Console

console = Console()
