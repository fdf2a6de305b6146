"""Helpers shared by the command modules: one-line errors with an exit code."""

from __future__ import annotations

from typing import NoReturn

import typer

USAGE_ERROR = 2  # bad arguments: unknown preset, wrong option value
DATA_ERROR = 1  # bad input files: missing or corrupt checkpoint or dataset


def fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
