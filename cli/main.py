"""The ``sdit`` console command: one Typer app, one module per command group."""

from __future__ import annotations

import logging

import typer

from cli import energy as energy_cli
from cli import evaluate as evaluate_cli
from cli import info, sample
from cli import profile as profile_cli
from cli import train as train_cli

app = typer.Typer(
    name="sdit",
    help="Spiking Diffusion Transformer: models, sampling, and per-layer energy profiling.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
info.register(app)
sample.register(app)
profile_cli.register(app)
energy_cli.register(app)
train_cli.register(app)
evaluate_cli.register(app)


def main() -> None:
    # spikingjelly registers Triton ops lazily; without Triton (any CPU machine) torch
    # logs a warning per registration that says nothing about the user's run.
    logging.getLogger("torch._library.triton").setLevel(logging.ERROR)
    app()
