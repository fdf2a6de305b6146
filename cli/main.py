"""The ``sdit`` console command: one Typer app, one module per command group."""

from __future__ import annotations

import ast
import importlib
import logging
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand

from cli.common import SditGroup
from sdit.heap import retain_freed_memory

# Command -> the module of cli/ that declares it (through its ``register``), in the order help lists them.
# A module is imported only when its command runs or shows its own help, so ``sdit --help`` and
# ``sdit --version`` load neither torch nor the library.
COMMANDS = {"info": "info", "sample": "sample", "profile": "profile", "energy": "energy", "compare": "compare",
            "train": "train", "convert": "convert", "table3": "table3", "evaluate": "evaluate",
            "report": "report", "quantize": "quantize"}


@cache
def _summary(name: str) -> str:
    """The first line of the command's docstring, read from its module's source without importing it."""
    tree = ast.parse((Path(__file__).parent / f"{COMMANDS[name]}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in (name, f"{name}_cmd"):
            return (ast.get_docstring(node) or "").split("\n", 1)[0]
    return ""


class LazyGroup(SditGroup):
    """:class:`SditGroup` whose commands are imported on first use; the command list is read from sources."""

    _listing = False

    def list_commands(self, ctx: typer.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: typer.Context, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return None
        if self._listing:  # the group's own help: a name and a line suffice
            return TyperCommand(cmd_name, help=_summary(cmd_name), short_help=_summary(cmd_name))
        return _load(cmd_name)

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


@cache
def _load(name: str) -> Any:
    """The click command ``cli/<module>.py`` registers, built by Typer as the group would build it."""
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    importlib.import_module(f"cli.{COMMANDS[name]}").register(single)
    (info,) = single.registered_commands
    return typer.main.get_command_from_info(info, pretty_exceptions_short=False,
                                            rich_markup_mode=typer.core.DEFAULT_MARKUP_MODE)

HELP = (
    "Spiking Diffusion Transformer: models, sampling, and per-layer energy profiling.\n\n"
    "Example: sdit compare checkpoints/sdit-small-fmnist checkpoints/dit-small-fmnist --out out/compare\n\n"
    "Every command: results on stdout, progress and notes on stderr (--quiet: errors only); --json PATH writes "
    "the machine-readable result ('-': stdout); --sample-steps counts denoising steps, --steps training steps."
)

app = typer.Typer(
    name="sdit",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=LazyGroup,
)


def version() -> str:
    """The installed package's version (its metadata), else pyproject.toml's beside this checkout."""
    try:
        return metadata.version("sdit")
    except metadata.PackageNotFoundError:
        import tomllib

        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        return str(tomllib.loads(pyproject.read_text())["project"]["version"])


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"sdit {version()}")
        raise typer.Exit(0)


@app.callback()
def _global_options(
    debug: bool = typer.Option(
        False, "--debug", help="Show the traceback of an internal error (exit code 1) instead of one line."
    ),
    show_version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="Print sdit's version and exit."
    ),
) -> None:
    # SditGroup.main reads --debug from the command line itself: errors can come before this runs.
    pass




def main() -> None:
    # spikingjelly registers Triton ops lazily; without Triton (any CPU machine) torch
    # logs a warning per registration that says nothing about the user's run.
    logging.getLogger("torch._library.triton").setLevel(logging.ERROR)
    retain_freed_memory()  # before any work allocates: freed activations stay mapped for the next step
    app()


if __name__ == "__main__":  # python -m cli.main
    main()
