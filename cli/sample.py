"""``sdit sample TARGET``: draw images with DDIM, DDPM or the authors' respaced DDPM; save a PNG grid (and tensors)."""

from __future__ import annotations

from pathlib import Path

import torch
import typer

from cli.common import (
    DATA_ERROR,
    MAX_IMAGES,
    SditCommand,
    check_number,
    check_outputs_or_fail,
    command_output,
    echo,
    fail,
    load_target_or_fail,
    progress_option,
    quiet_option,
)
from cli.options import (
    device_from_option,
    device_option,
    eta_option,
    method_option,
    sample_steps_option,
    seed_option,
    workload_from_options,
)
from sdit.artifacts import is_stdout, save_image_grid, save_tensors
from sdit.diffusion import num_classes_of, sample, uniform_labels
from sdit.quality.evaluate import sampler_description, sampler_record


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
    num: int = typer.Option(16, "--num", "-n", min=1, help="Number of images (one batch)."),
    method: str = method_option(forward=False),
    sample_steps: int | None = sample_steps_option(),
    eta: float | None = eta_option(),
    seed: int = seed_option(),
    labels_text: str | None = typer.Option(
        None, "--labels", help="Classes for a class-conditional model, comma-separated, cycled over the images "
        "(default: uniform over the classes, from --seed)."
    ),
    tensor: Path | None = typer.Option(
        None, "--tensor", help="Also save the samples (N, C, H, W) in [-1, 1] as safetensors."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out (and --tensor) if they exist."),
    compile_: bool = typer.Option(
        False, "--compile", help="Run the model through torch.compile (faster for many images; compiles first)."
    ),
    device: str | None = device_option("the model samples on"),
    quiet: bool = quiet_option(),
    progress: bool | None = progress_option("the denoising steps"),
) -> None:
    """Sample images from a model and save them as a grid.

    Example: sdit sample checkpoints/sdit-small-fmnist --out grid.png --num 16 --sample-steps 50 --eta 1
    """
    with command_output(quiet, progress):
        _sample(target, out, num, method, sample_steps, labels_text, eta, seed, tensor, overwrite, compile_, device)


def _sample(target: str, out: Path, num: int, method: str, sample_steps: int | None, labels_text: str | None,
            eta: float | None, seed: int, tensor: Path | None, overwrite: bool, compile_: bool,
            device: str | None) -> None:
    check_number("--num", num, 1, MAX_IMAGES)
    workload = workload_from_options(method, sample_steps, eta, None, num, seed, forward=False)
    check_outputs_or_fail({"--out": out, "--tensor": tensor}, overwrite, stdout_ok=("--out", "--tensor"))
    device = device_from_option(device)
    loaded = load_target_or_fail(target, "samples are noise-like")
    model, source = loaded.model.to(device), loaded.description
    model.eval()
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
    net = torch.compile(model) if compile_ else model
    images = sample(net, workload, labels=labels, device=device).cpu()  # (n, C, H, W)
    sampler = sampler_description(workload)
    if labels is not None:
        sampler += f", labels {','.join(map(str, labels.tolist()[:10]))}{'...' if num > 10 else ''}"
    if not torch.isfinite(images).all():
        fail(f"the model of {source} produced non-finite samples (NaN or inf); nothing written", DATA_ERROR)
    path = save_image_grid(images, out, overwrite=overwrite)
    if tensor is not None:
        info = {"source": source, **{k: format(v, "g") if isinstance(v, float) else str(v)
                                     for k, v in sampler_record(workload).items()}}
        if labels is not None:
            info["labels"] = ",".join(map(str, labels.tolist()))
        save_tensors({"samples": images}, tensor, metadata=info, overwrite=overwrite)
    also = f" and {tensor}" if tensor is not None else ""
    echo(f"wrote {num} samples of {source} ({sampler}, seed {seed}) to {path}{also}",
         err=is_stdout(out) or is_stdout(tensor))


def register(app: typer.Typer) -> None:
    app.command("sample", cls=SditCommand)(sample_cmd)
