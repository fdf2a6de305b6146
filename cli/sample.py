"""``sdit sample TARGET``: draw images with DDIM, DDPM or the authors' respaced DDPM; save a PNG grid (and tensors)."""

from __future__ import annotations

from pathlib import Path

import torch
import typer

from cli.common import (
    DATA_ERROR,
    MAX_IMAGES,
    OUTPUT_PANEL,
    WORKLOAD_PANEL,
    SditCommand,
    check_number,
    check_outputs_or_fail,
    command_output,
    echo,
    fail,
    in_panels,
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
from cli.ranks import open_shards, process_group, rank_output
from sdit.artifacts import is_stdout, save_image_grid, save_tensors
from sdit.diffusion import num_classes_of
from sdit.distributed import DistContext
from sdit.quality.evaluate import sampler_description, sampler_record
from sdit.sharding import batches, draw_set, set_labels


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
    num: int = typer.Option(16, "--num", "--num-images", "-n", min=1, help="Number of images. Under torchrun write "
                            "--num-images or -n: torchrun reads --num as its --numa-binding."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Images per model call (default: all "
                                          "in one; the noise is per image, so it changes only rounding)."),
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
    shards: Path | None = typer.Option(
        None, "--shards", help="Keep each finished batch in this directory and reuse those there when the command "
        "runs again (after a kill, with any number of torchrun processes); refused if made by other settings."
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

    Image i's noise comes from its own generator, seeded from (--seed, i).

    Under torchrun the ranks share the batches; rank 0 writes (docs/distributed.md).
    """
    quiet, progress = rank_output(quiet, progress)
    with command_output(quiet, progress):
        with process_group(device_from_option(device)) as ctx:
            _sample(ctx, target, out, num, batch_size, method, sample_steps, labels_text, eta, seed, tensor, shards,
                    overwrite, compile_)


def _sample(ctx: DistContext, target: str, out: Path, num: int, batch_size: int | None, method: str,
            sample_steps: int | None, labels_text: str | None, eta: float | None, seed: int, tensor: Path | None,
            shards: Path | None, overwrite: bool, compile_: bool) -> None:
    check_number("--num", num, 1, MAX_IMAGES)
    workload = workload_from_options(method, sample_steps, eta, None, num if batch_size is None else batch_size,
                                     seed, forward=False)
    check_outputs_or_fail({"--out": out, "--tensor": tensor}, overwrite, stdout_ok=("--out", "--tensor"))
    device = ctx.device
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
        labels = set_labels(model, num, seed)
    store = open_shards(ctx, shards, model, source, workload, loaded.source == "preset",
                        labels=labels_text or "uniform")
    net = torch.compile(model) if compile_ else model
    images, reused = draw_set(net, num, workload, device, ctx, store, labels)  # (n, C, H, W)
    if not ctx.is_main:
        return
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
    if shards is not None:
        echo(f"shards in {shards}: {reused} batches reused, {len(batches(num, workload.batch_size)) - reused} drawn",
             err=True)


# Help panels of the command's options (cli.common.in_panels); the rest are its main "Options".
PANELS = {WORKLOAD_PANEL: ("--num", "--batch-size", "--labels", "--compile"),
          OUTPUT_PANEL: ("--out", "--tensor", "--shards", "--overwrite")}


def register(app: typer.Typer) -> None:
    app.command("sample", cls=SditCommand)(in_panels(sample_cmd, PANELS))
