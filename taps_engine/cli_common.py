"""Console and error reporting shared by every `taps` sub-command."""

from __future__ import annotations

import typer
from rich.console import Console

console = Console()
err = Console(stderr=True)


def fail(message: str) -> None:
    """One clear line on stderr and exit code 2: never a stack trace for bad input."""
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)
