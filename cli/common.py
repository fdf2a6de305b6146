"""Helpers shared by the command modules: one-line errors with an exit code."""

from __future__ import annotations

from typing import NoReturn

import typer

from sdit.targets import Target, TargetError, load_target

USAGE_ERROR = 2  # bad arguments: unknown preset, wrong option value
DATA_ERROR = 1  # bad input files: missing or corrupt checkpoint or dataset


def fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def load_target_or_fail(target: str, untrained_note: str) -> Target:
    """:func:`sdit.targets.load_target`, with one-line errors: exit 2 for a name that is
    neither a preset nor a path, exit 1 for a missing or corrupt checkpoint. For a preset,
    prints ``note: TARGET is a preset with untrained weights; <untrained_note>``."""
    try:
        loaded = load_target(target)
    except TargetError as err:
        fail(str(err))
    except ValueError as err:  # CheckpointError and config errors
        fail(str(err), DATA_ERROR)
    if loaded.source == "preset":
        typer.echo(f"note: {target} is a preset with untrained weights; {untrained_note}", err=True)
    return loaded
