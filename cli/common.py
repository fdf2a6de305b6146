"""Helpers shared by the command modules: one-line errors with an exit code, checks of options before work.

Exit codes: 0 done, 2 bad input or usage (an option value, a missing or corrupt checkpoint or dataset, an
output that may not be written), 1 an internal error, 130 interrupted (Ctrl-C). An error is one line on
stderr, ``error: ...``; ``sdit --debug COMMAND`` (or ``SDIT_DEBUG=1``) shows the traceback of an internal one.
"""

from __future__ import annotations

import math
import os
import sys
import traceback
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # typer's own click
from typer.core import TyperGroup

from sdit.artifacts import OutputError, OverwriteError, check_outputs
from sdit.targets import Target, TargetError, load_target

USAGE_ERROR = 2  # bad arguments: unknown preset, wrong option value, an output that may not be written
DATA_ERROR = 2  # bad input files: missing or corrupt checkpoint or dataset (bad input too, so also 2)
INTERNAL_ERROR = 1  # a bug or an unexpected failure of the machine: not the user's input
INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT
MAX_IMAGES = 65_536  # images per command call or batch: more is a typo, not a workload
SEED_MAX = 2**63 - 1  # seeds are mixed in 64-bit arithmetic; torch takes at most 2**64 - 1


def fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(code)


def one_line(text: object) -> str:
    """``text`` with its whitespace runs (newlines included) folded to single spaces, at most 400 characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= 400 else flat[:397] + "..."


def load_target_or_fail(target: str, untrained_note: str) -> Target:
    """:func:`sdit.targets.load_target`, with one-line errors (exit 2): a name that is neither a preset nor
    a path, a missing or corrupt checkpoint. For a preset, prints
    ``note: TARGET is a preset with untrained weights; <untrained_note>``."""
    try:
        loaded = load_target(target)
    except TargetError as err:
        fail(str(err))
    except ValueError as err:  # CheckpointError and config errors
        fail(str(err), DATA_ERROR)
    if loaded.source == "preset":
        typer.echo(f"note: {target} is a preset with untrained weights; {untrained_note}", err=True)
    return loaded


def check_outputs_or_fail(
    paths: Mapping[str, Path | str | None], overwrite: bool, stdout_ok: Iterable[str] = ()
) -> None:
    """:func:`sdit.artifacts.check_outputs` with a one-line error (exit 2); call it before any work."""
    try:
        check_outputs(paths, overwrite=overwrite, stdout_ok=stdout_ok)
    except OutputError as err:
        fail(str(err))


def check_number(
    option: str,
    value: float | int | None,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Exit 2 unless ``value`` (when given) is finite and in the range; ``*_open`` excludes that end."""
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        fail(f"{option} must be a finite number, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        fail(f"{option} must be {'>' if low_open else '>='} {low:g}, got {value:g}")
    if high is not None and (value > high or (high_open and value == high)):
        fail(f"{option} must be {'<' if high_open else '<='} {high:g}, got {value:g}")


def check_seed(option: str, value: int | None) -> None:
    """Exit 2 unless ``value`` (when given) is a seed every generator takes: 0 <= seed <= 2**63 - 1."""
    if value is not None and not 0 <= value <= SEED_MAX:
        fail(f"{option} must be in [0, 2**63 - 1], got {value}")


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input when they reach the top (a command did not catch them itself)."""
    from sdit.checkpoint import CheckpointError
    from sdit.config import UnknownPresetError
    from sdit.data import DatasetError
    from sdit.train import TrainError

    return (OutputError, OverwriteError, CheckpointError, TargetError, UnknownPresetError, DatasetError, TrainError)


def _debug_from_env() -> bool:
    """``SDIT_DEBUG`` set to something other than 0 or empty."""
    return os.environ.get("SDIT_DEBUG", "") not in ("", "0")


class SditGroup(TyperGroup):
    """The ``sdit`` command group: every way out is one line on stderr with the exit code of the module doc."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if not standalone_mode:
            return super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as err:
            typer.echo(err.format_message())
            sys.exit(USAGE_ERROR)
        except UsageError as err:
            hint = f" (see {err.ctx.command_path} --help)" if err.ctx is not None else ""
            _exit_with(f"{err.format_message()}{hint}", USAGE_ERROR)
        except ClickException as err:
            _exit_with(err.format_message(), err.exit_code)
        except typer.Abort:
            _exit_with("interrupted", INTERRUPTED)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: typer.Context) -> Any:
        debug = bool(ctx.params.get("debug")) or _debug_from_env()
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, ClickException):
            raise
        except KeyboardInterrupt:
            typer.echo("error: interrupted", err=True)
            raise typer.Exit(INTERRUPTED) from None
        except Exception as err:  # the last resort: one line, the traceback only when asked  # noqa: BLE001
            if debug:
                traceback.print_exc()
            code, message = _describe(err, debug)
            typer.echo(f"error: {one_line(message)}", err=True)
            raise typer.Exit(code) from None


def _describe(err: Exception, debug: bool) -> tuple[int, str]:
    """Exit code and message for an exception no command caught."""
    if isinstance(err, _user_error_types()):
        return USAGE_ERROR, str(err)
    if isinstance(err, OSError) and err.strerror:
        return INTERNAL_ERROR, f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    note = "" if debug else " (rerun as sdit --debug ... for the traceback)"
    return INTERNAL_ERROR, f"internal error: {type(err).__name__}: {err}{note}"


def _exit_with(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {one_line(message)}", err=True)
    sys.exit(code)
