"""The ``sdit`` console command: one Typer app, one module per command group."""

from __future__ import annotations

import logging

import typer

from cli import compare as compare_cli
from cli import convert, info, sample
from cli import energy as energy_cli
from cli import evaluate as evaluate_cli
from cli import profile as profile_cli
from cli import table3 as table3_cli
from cli import train as train_cli
from cli.common import SditGroup

app = typer.Typer(
    name="sdit",
    help="Spiking Diffusion Transformer: models, sampling, and per-layer energy profiling.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=SditGroup,
)


@app.callback()
def _global_options(
    debug: bool = typer.Option(
        False, "--debug", help="Show the traceback of an internal error (exit code 1) instead of one line."
    ),
) -> None:
    """Spiking Diffusion Transformer: models, sampling, and per-layer energy profiling."""
    # SditGroup.main reads --debug from the command line itself: errors can come before this runs.


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
    app()
