"""``sdit sample TARGET``: draw images with DDIM or DDPM and save a PNG grid."""

from __future__ import annotations

from pathlib import Path

import torch
import typer

from cli.common import fail
from sdit.artifacts import OverwriteError, save_image_grid
from sdit.config import UnknownPresetError
from sdit.diffusion import Diffusion, sample
from sdit.models import build_model


def sample_cmd(
    target: str = typer.Argument(..., help="Preset name (untrained weights, for smoke runs)."),
    out: Path = typer.Option(..., "--out", help="PNG grid to write."),
    num: int = typer.Option(16, "--num", "-n", min=1, help="Number of images."),
    method: str = typer.Option("ddim", "--method", help="ddim or ddpm."),
    steps: int = typer.Option(50, "--steps", min=1, max=1000, help="DDIM steps (DDPM runs all 1000)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initial noise."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
) -> None:
    """Sample images from a model and save them as a grid."""
    if method not in ("ddim", "ddpm"):
        fail(f"--method must be ddim or ddpm, got {method!r}")
    if out.exists() and not overwrite:
        fail(f"{out} exists; pass --overwrite to replace it")
    try:
        model = build_model(target)
    except UnknownPresetError as err:
        fail(str(err))
    typer.echo(f"note: {target} is a preset with untrained weights; samples are noise-like", err=True)
    model.eval()
    cfg = model.config
    torch.manual_seed(seed)
    shape = (num, cfg.in_channels, cfg.image_size, cfg.image_size)
    images = sample(model, Diffusion(), shape, method=method, num_steps=steps, seed=seed)
    try:
        path = save_image_grid(images, out, overwrite=overwrite)
    except OverwriteError as err:
        fail(str(err))
    typer.echo(f"wrote {num} samples ({method}, {steps if method == 'ddim' else 1000} steps, seed {seed}) to {path}")


def register(app: typer.Typer) -> None:
    app.command("sample")(sample_cmd)
