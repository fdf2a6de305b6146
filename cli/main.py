"""The ``sdit`` console command: one Typer app, one module per command group."""

from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path

import typer

from cli import compare as compare_cli
from cli import convert, info, sample
from cli import energy as energy_cli
from cli import evaluate as evaluate_cli
from cli import profile as profile_cli
from cli import table3 as table3_cli
from cli import train as train_cli
from cli.common import SditGroup
from sdit.heap import retain_freed_memory

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
    cls=SditGroup,
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


info.register(app)
sample.register(app)
profile_cli.register(app)
energy_cli.register(app)
compare_cli.register(app)
train_cli.register(app)
convert.register(app)
table3_cli.register(app)
evaluate_cli.register(app)


def main() -> None:
    # spikingjelly registers Triton ops lazily; without Triton (any CPU machine) torch
    # logs a warning per registration that says nothing about the user's run.
    logging.getLogger("torch._library.triton").setLevel(logging.ERROR)
    retain_freed_memory()  # before any work allocates: freed activations stay mapped for the next step
    app()


if __name__ == "__main__":  # python -m cli.main
    main()
