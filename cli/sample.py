"""``sdit sample TARGET``: draw images with DDIM or DDPM and save a PNG grid (and a tensor file)."""

from __future__ import annotations

from pathlib import Path

import torch
import typer

from cli.common import (
    DATA_ERROR,
    MAX_IMAGES,
    check_number,
    check_outputs_or_fail,
    check_seed,
    fail,
    load_target_or_fail,
)
from sdit.artifacts import is_stdout, save_image_grid, save_tensors
from sdit.diffusion import Diffusion, check_sampler, sample


def sample_cmd(
    target: str = typer.Argument(
        ..., help="Checkpoint (.safetensors), run directory (its latest checkpoint, EMA weights), shipped directory, "
        "or preset name (untrained weights, for smoke runs)."
    ),
    out: Path = typer.Option(..., "--out", help="PNG grid to write ('-' for standard output)."),
    num: int = typer.Option(16, "--num", "-n", min=1, help="Number of images."),
    method: str = typer.Option("ddim", "--method", help="ddim or ddpm."),
    steps: int = typer.Option(50, "--steps", min=1, max=1000, help="DDIM steps (DDPM runs all 1000)."),
    eta: float = typer.Option(
        0.0, "--eta", help="DDIM noise scale in [0, 1]: 0 deterministic, 1 DDPM's variance at the chosen steps "
        "(stochastic sampling is markedly cleaner for SDiT)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the initial noise (and of DDPM / eta > 0 noise)."),
    tensor: Path | None = typer.Option(
        None, "--tensor", help="Also save the samples (N, C, H, W) in [-1, 1] as safetensors ('-': stdout)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out (and --tensor) if they exist."),
    compile_: bool = typer.Option(
        False, "--compile", help="Run the model through torch.compile (faster for many images; compiles first)."
    ),
) -> None:
    """Sample images from a model and save them as a grid."""
    try:
        check_sampler(method, eta)
    except ValueError as err:
        fail(f"--method / --eta: {err}")
    check_number("--num", num, 1, MAX_IMAGES)
    check_seed("--seed", seed)
    check_outputs_or_fail({"--out": out, "--tensor": tensor}, overwrite, stdout_ok=("--out", "--tensor"))
    loaded = load_target_or_fail(target, "samples are noise-like")
    model, source = loaded.model, loaded.description
    model.eval()
    cfg = model.config
    torch.manual_seed(seed)
    shape = (num, cfg.in_channels, cfg.image_size, cfg.image_size)
    net = torch.compile(model) if compile_ else model
    images = sample(net, Diffusion(), shape, method=method, num_steps=steps, seed=seed, eta=eta)  # (n, C, H, W)
    num_steps = steps if method == "ddim" else 1000
    sampler = f"ddim, {num_steps} steps, eta {eta:g}" if method == "ddim" else "ddpm, 1000 steps"
    if not torch.isfinite(images).all():
        fail(f"the model of {source} produced non-finite samples (NaN or inf); nothing written", DATA_ERROR)
    path = save_image_grid(images, out, overwrite=overwrite)
    if tensor is not None:
        info = {"source": source, "method": method, "steps": str(num_steps), "eta": f"{eta:g}", "seed": str(seed)}
        save_tensors({"samples": images}, tensor, metadata=info, overwrite=overwrite)
    also = f" and {tensor}" if tensor is not None else ""
    typer.echo(f"wrote {num} samples of {source} ({sampler}, seed {seed}) to {path}{also}",
               err=is_stdout(out) or is_stdout(tensor))


def register(app: typer.Typer) -> None:
    app.command("sample")(sample_cmd)
