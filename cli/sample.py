"""``sdit sample TARGET``: draw images with DDIM, DDPM or the authors' respaced DDPM; save a PNG grid (and tensors)."""

from __future__ import annotations

from pathlib import Path

import torch
import typer

from cli.common import (
    DATA_ERROR,
    MAX_IMAGES,
    SditCommand,
    check_device,
    check_number,
    check_outputs_or_fail,
    check_seed,
    command_output,
    deprecated_alias,
    echo,
    fail,
    load_target_or_fail,
    progress_option,
    quiet_option,
)
from sdit.artifacts import is_stdout, save_image_grid, save_tensors
from sdit.diffusion import Diffusion, check_sampler, num_classes_of, sample, uniform_labels
from sdit.iddpm import DEFAULT_STEPS as RESPACED_STEPS

DDIM_STEPS = 50


def parse_labels(text: str, num: int, num_classes: int) -> torch.Tensor:
    """``"3,5"`` -> (num,) labels cycling 3, 5, 3, ...; each in 0..K-1.

    Raises:
        ValueError: not comma-separated integers in range.
    """
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--labels must be comma-separated integers, got {text!r}") from None
    if not values or any(not 0 <= v < num_classes for v in values):
        raise ValueError(f"--labels must be classes in 0..{num_classes - 1}, got {text!r}")
    return torch.tensor([values[i % len(values)] for i in range(num)], dtype=torch.long)


def sample_cmd(
    target: str = typer.Argument(
        ..., help="Checkpoint (.safetensors), run directory (its latest checkpoint, EMA weights), shipped directory, "
        "or preset name (untrained weights, for smoke runs)."
    ),
    out: Path = typer.Option(..., "--out", help="PNG grid to write ('-' for standard output)."),
    num: int = typer.Option(16, "--num", "-n", min=1, help="Number of images."),
    method: str = typer.Option(
        "ddim", "--method", help="ddim, ddpm, or ddpm-respaced (the authors' sampler: ancestral DDPM over "
        "--sample-steps respaced steps with the model's learned variance)."
    ),
    sample_steps: int | None = typer.Option(
        None, "--sample-steps", min=1, max=1000,
        help=f"DDIM steps (default {DDIM_STEPS}) or respaced DDPM steps (default {RESPACED_STEPS}); DDPM runs all 1000."
    ),
    steps_old: int | None = typer.Option(None, "--steps", min=1, max=1000, hidden=True,
                                         help="Deprecated name of --sample-steps."),
    labels_text: str | None = typer.Option(
        None, "--labels", help="Classes for a class-conditional model, comma-separated, cycled over the images "
        "(default: uniform over the classes, from --seed)."
    ),
    eta: float = typer.Option(
        0.0, "--eta", help="DDIM noise scale in [0, 1]: 0 deterministic, 1 DDPM's variance at the chosen steps "
        "(stochastic sampling is markedly cleaner for SDiT)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the initial noise (and of DDPM / eta > 0 noise)."),
    tensor: Path | None = typer.Option(
        None, "--tensor", help="Also save the samples (N, C, H, W) in [-1, 1] as safetensors."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out (and --tensor) if they exist."),
    compile_: bool = typer.Option(
        False, "--compile", help="Run the model through torch.compile (faster for many images; compiles first)."
    ),
    device: str = typer.Option("cpu", "--device", help="torch device the model samples on (cpu, cuda, cuda:1)."),
    quiet: bool = quiet_option(),
    progress: bool | None = progress_option("the denoising steps"),
) -> None:
    """Sample images from a model and save them as a grid.

    Example: sdit sample checkpoints/sdit-small-fmnist --out grid.png --num 16 --sample-steps 50 --eta 1
    """
    with command_output(quiet, progress):
        _sample(target, out, num, method, deprecated_alias("--sample-steps", sample_steps, None, "--steps", steps_old),
                labels_text, eta, seed, tensor, overwrite, compile_, device)


def _sample(target: str, out: Path, num: int, method: str, steps: int | None, labels_text: str | None, eta: float,
            seed: int, tensor: Path | None, overwrite: bool, compile_: bool, device: str) -> None:
    try:
        check_sampler(method, eta)
    except ValueError as err:
        fail(f"--method / --eta: {err}")
    check_number("--num", num, 1, MAX_IMAGES)
    check_seed("--seed", seed)
    check_outputs_or_fail({"--out": out, "--tensor": tensor}, overwrite, stdout_ok=("--out", "--tensor"))
    num_steps = {"ddim": steps or DDIM_STEPS, "ddpm-respaced": steps or RESPACED_STEPS}.get(method, 1000)
    if method == "ddpm-respaced" and num_steps < 2:
        fail("--sample-steps: respaced DDPM needs at least 2 steps")
    device = check_device("--device", device)
    loaded = load_target_or_fail(target, "samples are noise-like")
    model, source = loaded.model.to(device), loaded.description
    model.eval()
    cfg = model.config
    classes = num_classes_of(model)
    labels = None
    if labels_text is not None:
        if not classes:
            fail(f"--labels: {target} is not class-conditional")
        try:
            labels = parse_labels(labels_text, num, classes)
        except ValueError as err:
            fail(str(err))
    elif classes:
        labels = uniform_labels(classes, num, seed)
    torch.manual_seed(seed)
    shape = (num, cfg.in_channels, cfg.image_size, cfg.image_size)
    net = torch.compile(model) if compile_ else model
    images = sample(net, Diffusion(), shape, method=method, num_steps=num_steps, seed=seed, eta=eta,
                    labels=labels, device=device).cpu()  # (n, C, H, W)
    sampler = {"ddim": f"ddim, {num_steps} steps, eta {eta:g}", "ddpm": "ddpm, 1000 steps",
               "ddpm-respaced": f"respaced ddpm, {num_steps} steps, learned variance"}[method]
    if labels is not None:
        sampler += f", labels {','.join(map(str, labels.tolist()[:10]))}{'...' if num > 10 else ''}"
    if not torch.isfinite(images).all():
        fail(f"the model of {source} produced non-finite samples (NaN or inf); nothing written", DATA_ERROR)
    path = save_image_grid(images, out, overwrite=overwrite)
    if tensor is not None:
        info = {"source": source, "method": method, "steps": str(num_steps), "eta": f"{eta:g}", "seed": str(seed)}
        if labels is not None:
            info["labels"] = ",".join(map(str, labels.tolist()))
        save_tensors({"samples": images}, tensor, metadata=info, overwrite=overwrite)
    also = f" and {tensor}" if tensor is not None else ""
    echo(f"wrote {num} samples of {source} ({sampler}, seed {seed}) to {path}{also}",
         err=is_stdout(out) or is_stdout(tensor))


def register(app: typer.Typer) -> None:
    app.command("sample", cls=SditCommand)(sample_cmd)
