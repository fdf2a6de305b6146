"""Helpers shared by the command modules: one-line errors with an exit code, checks of options before work.

Exit codes: 0 done, 2 bad input or usage (an option value, a missing or corrupt checkpoint or dataset, an
output that may not be written), 1 an internal error, 130 interrupted (Ctrl-C). An error is one line on
stderr, ``error: ...``; ``sdit --debug COMMAND`` (or ``SDIT_DEBUG=1``) shows the traceback of an internal one.

Output: stdout carries only the command's result (a table, or the machine-readable file given as ``-``);
progress bars, notes and status lines go to stderr. Progress bars (rich) show while stderr is a terminal;
``--progress`` / ``--no-progress`` or ``SDIT_PROGRESS=1`` / ``0`` force them on or off, and ``--quiet``
leaves nothing on stderr but errors.

One vocabulary over the commands: ``--json PATH`` writes the machine-readable result to PATH (``-``:
stdout, the human-readable output then goes to stderr); ``--steps`` counts training steps only;
``--sample-steps`` counts diffusion (denoising) steps everywhere; ``--device`` is where the model runs.
"""

from __future__ import annotations

import inspect
import math
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, get_args

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # typer's own click
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption
from typer.models import OptionInfo

from sdit import progress as sdit_progress
from sdit.artifacts import OutputError, OverwriteError, check_outputs

if TYPE_CHECKING:  # the command's startup stays free of torch: targets load when a command runs
    from profiling.study import FinishedStudy
    from sdit.targets import Target

USAGE_ERROR = 2  # bad arguments: unknown preset, wrong option value, an output that may not be written
DATA_ERROR = 2  # bad input files: missing or corrupt checkpoint or dataset (bad input too, so also 2)
INTERNAL_ERROR = 1  # a bug or an unexpected failure of the machine: not the user's input
INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT
MAX_IMAGES = 65_536  # images per command call or batch: more is a typo, not a workload
SEED_MAX = 2**63 - 1  # seeds are mixed in 64-bit arithmetic; torch takes at most 2**64 - 1
PROGRESS_ENV = "SDIT_PROGRESS"  # 1 forces progress bars on stderr (also when it is no terminal), 0 turns them off

_QUIET: ContextVar[bool] = ContextVar("sdit_cli_quiet", default=False)
_REPORTER: ContextVar[RichReporter | None] = ContextVar("sdit_cli_reporter", default=None)


def fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(code)


def one_line(text: object) -> str:
    """``text`` with its whitespace runs (newlines included) folded to single spaces, at most 400 characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= 400 else flat[:397] + "..."


def is_quiet() -> bool:
    """Whether the running command was given ``--quiet``."""
    return _QUIET.get()


def note(text: str) -> None:
    """A line for the user on stderr (a note, a status line, ``wrote ...`` beside a result on stdout),
    printed above any progress bar; nothing with ``--quiet``."""
    if _QUIET.get():
        return
    reporter = _REPORTER.get()
    if reporter is not None and reporter.live:
        reporter.console.print(text, soft_wrap=True, markup=False, highlight=False)
    else:
        typer.echo(text, err=True)


def status(text: str) -> None:
    """A progress line (``profiling X``, ``measuring X``): above the bars while progress shows, else nothing."""
    reporter = _REPORTER.get()
    if reporter is not None and not _QUIET.get():
        reporter.console.print(text, soft_wrap=True, markup=False, highlight=False)


def echo(text: str, err: bool = False) -> None:
    """``typer.echo`` of a command's output line: on stderr (``err``) it is a :func:`note`."""
    if err:
        note(text)
    else:
        typer.echo(text)


def quiet_option() -> Any:
    """The ``--quiet`` / ``-q`` option of a command (a fresh one per command)."""
    return typer.Option(False, "--quiet", "-q", rich_help_panel=OUTPUT_PANEL, help="Nothing on stderr but "
                        "errors: no progress, notes or status lines. stdout is unchanged.")


def progress_option(what: str = "the long loops") -> Any:
    """The ``--progress/--no-progress`` option of a command: ``None`` (auto) unless given."""
    return typer.Option(None, "--progress/--no-progress", show_default=False, rich_help_panel=OUTPUT_PANEL,
                        help=f"Progress bars for {what} on stderr. Default: when stderr is a terminal "
                        f"({PROGRESS_ENV}=1 or 0 forces it).")


def progress_wanted(progress: bool | None, quiet: bool) -> bool:
    """Whether to show progress: never with ``quiet``; else the explicit choice; else ``SDIT_PROGRESS``
    (anything but ``0``, ``false``, ``no``, ``off`` or empty is on); else whether stderr is a terminal."""
    if quiet:
        return False
    if progress is not None:
        return progress
    env = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if env:
        return env not in ("0", "false", "no", "off")
    return sys.stderr.isatty()


class RichReporter:
    """Renders :mod:`sdit.progress` tasks as rich progress bars on stderr, one row per open task; the
    bars disappear when the last task ends (nothing of them stays in the terminal's scrollback)."""

    def __init__(self, force_terminal: bool) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, force_terminal=force_terminal or None)
        self._bars: Any = None  # a rich Progress while a task is open
        self._open = 0

    @property
    def live(self) -> bool:
        return self._bars is not None

    def start(self, label: str, total: int | None) -> Any:
        if self._bars is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            # no redirection of stdout: results (PNG bytes, JSON) go there untouched
            self._bars = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                                  console=self.console, transient=True, redirect_stdout=False,
                                  redirect_stderr=False)
            self._bars.start()
        self._open += 1
        return self._bars.add_task(("  " * (self._open - 1)) + label, total=total)

    def update(self, handle: Any, done: int) -> None:
        if self._bars is not None:
            self._bars.update(handle, completed=done)

    def end(self, handle: Any) -> None:
        if self._bars is None:
            return
        self._bars.remove_task(handle)
        self._open -= 1
        if self._open <= 0:
            self.close()

    def close(self) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars, self._open = None, 0


@contextmanager
def command_output(quiet: bool = False, progress: bool | None = None) -> Iterator[None]:
    """The output mode of one command: ``quiet`` for :func:`note`, and rich progress bars on stderr for
    every :mod:`sdit.progress` task run inside (when :func:`progress_wanted`)."""
    show = progress_wanted(progress, quiet)
    reporter = RichReporter(force_terminal=progress is True or bool(os.environ.get(PROGRESS_ENV))) if show else None
    quiet_token, reporter_token = _QUIET.set(quiet), _REPORTER.set(reporter)
    try:
        with sdit_progress.reporting(reporter):
            yield
    finally:
        if reporter is not None:
            reporter.close()
        _REPORTER.reset(reporter_token)
        _QUIET.reset(quiet_token)


def check_device(option: str, value: str) -> str:
    """``value`` as a torch device string (``cpu``, ``cuda``, ``cuda:1``, ...); exit 2 for a name torch
    does not know or a CUDA device this machine does not have."""
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        fail(f"{option} must be a torch device such as cpu, cuda or cuda:0, got {value!r}")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            fail(f"{option} {value}: no CUDA device is available on this machine")
        if device.index is not None and device.index >= count:
            fail(f"{option} {value}: this machine has {count} CUDA device(s)")
    elif device.type not in ("cpu", "mps"):
        fail(f"{option} must be cpu or a cuda device, got {value!r}")
    return str(device)


def load_target_or_fail(target: str, untrained_note: str) -> Target:
    """:func:`sdit.targets.load_target`, with one-line errors (exit 2): a name that is neither a preset nor
    a path, a missing or corrupt checkpoint. For a preset, prints
    ``note: TARGET is a preset with untrained weights; <untrained_note>``."""
    from sdit.targets import TargetError, load_target

    try:
        loaded = load_target(target)
    except TargetError as err:
        fail(str(err))
    except ValueError as err:  # CheckpointError and config errors
        fail(str(err), DATA_ERROR)
    if loaded.source == "preset":
        note(f"note: {target} is a preset with untrained weights; {untrained_note}")
    return loaded


def check_outputs_or_fail(
    paths: Mapping[str, Path | str | None], overwrite: bool, stdout_ok: Iterable[str] = ()
) -> None:
    """:func:`sdit.artifacts.check_outputs` with a one-line error (exit 2); call it before any work."""
    try:
        check_outputs(paths, overwrite=overwrite, stdout_ok=stdout_ok)
    except OutputError as err:
        fail(str(err))


def present_comparison(finished: FinishedStudy, out: Path, json_path: Path | None, overwrite: bool,
                       quiet: bool, source: str = "") -> None:
    """Show a finished study in the terminal (the verdict per convention, the verdict matrix, the energy-quality
    frontier when models have a FID) and write its
    report directory ``out`` (and ``json_path``; ``-``: stdout, everything else then on stderr), naming what
    was written (``source``: what it was built from, shown after the JSON's name); the report directory must be
    claimed already (:func:`reports.report.claim_report_dir`)."""
    from rich.console import Console

    from profiling.compare import verdict_matrix
    from reports import terminal
    from reports.page import build_page
    from reports.report import COMPARISON, write_report
    from reports.study import study_view
    from sdit.artifacts import is_stdout

    to_stdout = is_stdout(json_path)  # the JSON alone on stdout; the tables and lines go to stderr
    study = study_view(finished)
    page = build_page(study, finished.run)
    console = Console(stderr=to_stdout, quiet=quiet and to_stdout)
    console.out(terminal.sensitivity_text(study, console.width), end="", highlight=False)
    matrix = verdict_matrix(finished.comparison)
    if matrix:
        console.out("\n" + terminal.verdict_text(matrix, finished.comparison.workload.label(), console.width,
                                                 labels=finished.labels,
                                                 untrained=terminal.untrained_of(finished.comparison)),
                    end="", highlight=False)
    frontier = terminal.frontier_text(study, console.width)
    if frontier:
        console.out("\n" + frontier, end="", highlight=False)
    written = write_report(out, page, finished.comparison, json_path, overwrite)
    if written.stale:
        note(f"note: removed {len(written.stale)} table(s) of the earlier report that this one has not: "
             f"{', '.join(p.name for p in written.stale)}")
    also = f" (and {json_path})" if json_path is not None and not to_stdout else ""
    echo(f"wrote {out / COMPARISON}{source}{also} and {written.tables} CSV tables in {out / 'tables'}",
         err=to_stdout)
    echo(f"report: {written.report}", err=to_stdout)


def command_line() -> str:
    """The command line as the user typed it, for provenance (``sdit ...`` when run as the sdit command)."""
    if Path(sys.argv[0]).name in ("sdit", "main.py"):
        return shlex.join(["sdit", *sys.argv[1:]])
    return shlex.join(sys.argv)


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
    from sdit.targets import TargetError
    from sdit.training.config import TrainError

    return (OutputError, OverwriteError, CheckpointError, TargetError, UnknownPresetError, DatasetError, TrainError)


def _debug_from_env() -> bool:
    """``SDIT_DEBUG`` set to something other than 0 or empty."""
    return os.environ.get("SDIT_DEBUG", "") not in ("", "0")


BARE_JSON = ("info",)  # commands whose --json was a flag (stdout) and that take one positional argument


def _bare_json(argv: list[str]) -> list[str]:
    """``argv`` with the old flag form of ``--json`` of a :data:`BARE_JSON` command read as ``--json -``:
    a bare ``--json`` (last, or before another option), or ``--json PRESET`` with no other positional."""
    command = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if command is None or argv[command] not in BARE_JSON:
        return argv
    head, rest = argv[: command + 1], argv[command + 1 :]
    out: list[str] = []
    i = 0
    while i < len(rest):
        arg = rest[i]
        following = rest[i + 1] if i + 1 < len(rest) else None
        if arg == "--json" and (following is None or (following.startswith("-") and following != "-")):
            out += ["--json", "-"]
            i += 1
            continue
        out.append(arg)
        if arg == "--json" and following is not None:
            out.append(following)
            i += 1
        i += 1
    positional = [a for j, a in enumerate(out) if not a.startswith("-") and (j == 0 or out[j - 1] != "--json")]
    if not positional and "--json" in out:  # `info --json PRESET`: the old flag before the argument
        j = out.index("--json")
        if j + 1 < len(out) and out[j + 1] != "-":
            out = [*out[:j], "--json", "-", out[j + 1], *out[j + 2 :]]
    return head + out


# Help panels (rich_help_panel) the commands share; an option in none is in the command's own "Options".
WORKLOAD_PANEL = "Workload"
ENERGY_PANEL = "Energy model"
MEASURE_PANEL = "Measurement"
OUTPUT_PANEL = "Output"
# The value an option takes, as its help names it: short, so that at 80 columns option names stay whole
# and the help text keeps its room (typer would print <float range>, <list[str]>, ...).
_METAVARS = {int: "INT", float: "NUM", str: "TEXT", Path: "PATH"}


def _flags_as_flags(params: list[Any]) -> list[Any]:
    """Boolean flags show no value type in the rich help (typer prints ``--overwrite <bool>`` otherwise); other
    options without a metavar show a short one (``INT``, ``NUM``, ``PATH``, ``TEXT``)."""
    for param in params:
        if isinstance(param, TyperArgument) and param.metavar is None:  # TARGET, not {target} <str>
            param.metavar = param.name.upper() + ("..." if param.nargs != 1 else "")
        if isinstance(param, TyperOption) and param.metavar is None:
            desc = param.type_descriptor
            element = get_args(desc.annotation)[0] if desc.is_list and get_args(desc.annotation) else desc.annotation
            param.metavar = "" if param.is_flag else _METAVARS.get(element, "VALUE")
    return params


def in_panels(command: Callable[..., Any], panels: Mapping[str, Sequence[str]]) -> Callable[..., Any]:
    """``command`` with its options grouped into help panels: panel -> option names (e.g. ``--json``), each
    set as that option's ``rich_help_panel``; an option named in no panel keeps its own (else "Options").

    Raises:
        ValueError: a name that is no option of ``command`` (a panel list out of date with the options).
    """
    infos = {decl: p.default for p in inspect.signature(command).parameters.values()
             if isinstance(p.default, OptionInfo) for decl in p.default.param_decls}
    for panel, names in panels.items():
        for name in names:
            if name not in infos:
                raise ValueError(f"{command.__name__}: no option {name} to put in the help panel {panel!r}")
            infos[name].rich_help_panel = panel
    return command


class SditCommand(TyperCommand):
    """A command of ``sdit``: flags shown as flags in its help, and an on/off pair's second name in its help text
    (``--progress ... Opposite: --no-progress.``) rather than in a column of its own, which would take the room of
    the help text at 80 columns."""

    def get_params(self, ctx: typer.Context) -> list[Any]:
        return _flags_as_flags(super().get_params(ctx))

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        pairs = [p for p in self.get_params(ctx) if isinstance(p, TyperOption) and p.secondary_opts]
        saved = [(p.secondary_opts, p.help, p.show_default) for p in pairs]
        try:
            for p in pairs:
                default = {True: p.opts[0], False: p.secondary_opts[0]}.get(p.default)  # None: the help says
                p.help = (f"{p.help or ''} Opposite: {', '.join(p.secondary_opts)}."
                          + (f" Default: {default}." if default else "")).strip()
                p.secondary_opts, p.show_default = [], False
            super().format_help(ctx, formatter)
        finally:
            for p, (secondary, text, show) in zip(pairs, saved, strict=True):
                p.secondary_opts, p.help, p.show_default = secondary, text, show


class SditGroup(TyperGroup):
    """The ``sdit`` command group: every way out is one line on stderr with the exit code of the module doc."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        argv = _bare_json(list(sys.argv[1:] if args is None else args))
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

    def get_params(self, ctx: typer.Context) -> list[Any]:
        return _flags_as_flags(super().get_params(ctx))

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
