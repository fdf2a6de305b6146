"""``sdit train``: train a preset on a dataset, or resume a run; the same under ``torchrun``."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from cli.common import (
    DATA_ERROR,
    INTERRUPTED,
    MAX_IMAGES,
    OUTPUT_PANEL,
    SditCommand,
    check_number,
    check_seed,
    fail,
    in_panels,
    progress_option,
    progress_wanted,
    quiet_option,
)
from sdit.checkpoint import CheckpointError
from sdit.config import UnknownPresetError
from sdit.data import DatasetError
from sdit.training.config import TrainConfig, TrainError, load_run_config, resume_config
from sdit.training.loop import TrainInterrupted
from sdit.training.run_files import last_checkpoint_note
from sdit.training.train import train

MAX_STEPS = 10**9  # optimizer steps (and step intervals): more is a typo


def _raise_interrupt(signum: int, frame: object) -> None:
    # one-shot: a second SIGTERM (slurm and torchrun both send one) must not cut short the first one's clean stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a scheduler's preemption, torchrun stopping its workers) stops a run as Ctrl-C does:
    the one-line note of where it stopped and how to resume, exit 130. A background job (``cmd &``) ignores
    SIGINT, so SIGTERM is the signal that reaches it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) is _raise_interrupt:  # not fired; once fired, it stays ignored while
            # the process reports the stop and exits. None: a handler not installed from Python; put back the default
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def train_cmd(
    preset: str | None = typer.Option(
        None, "--preset", help="Model preset, e.g. sdit-small or dit-small (required unless --resume)."
    ),
    dataset: str | None = typer.Option(None, "--dataset", help="fashion-mnist (default), mnist or cifar10."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Folder of the dataset's standard files."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Global batch (split over ranks). [64]"),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Total optimizer steps to reach."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Total epochs to reach (instead of --steps)."),
    lr: float | None = typer.Option(None, "--lr", help="Peak AdamW learning rate. [1e-4]"),
    warmup_steps: int | None = typer.Option(None, "--warmup-steps", min=0, help="Linear warm-up steps. [1000]"),
    ema_decay: float | None = typer.Option(None, "--ema-decay", help="EMA decay of the sampling weights. [0.9999]"),
    weight_decay: float | None = typer.Option(
        None, "--weight-decay", min=0, help="AdamW weight decay (the authors' code: 0.01). [0]"
    ),
    rate_penalty: float | None = typer.Option(
        None, "--rate-penalty", help="Add LAMBDA x the mean firing rate of the LIF layers to the loss (sparser "
        "spikes, lower energy, some quality). [0]", metavar="LAMBDA",
    ),
    init_from: str | None = typer.Option(
        None, "--init-from", help="Start from these weights: a checkpoint of ours or an authors' .pt (e.g. to "
        "continue training their model with --preset sdit-mnist-authors)."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed of init, data order, timesteps and noise. [0]"),
    out: Path | None = typer.Option(None, "--out", help="Run directory to create."),
    resume: Path | None = typer.Option(
        None, "--resume", help="Run directory to continue from its latest checkpoint."
    ),
    log_every: int | None = typer.Option(None, "--log-every", min=1, help="Steps per metrics line. [50]"),
    sample_every: int | None = typer.Option(None, "--sample-every", min=0, help="Steps per sample grid. [1000]"),
    ckpt_every: int | None = typer.Option(None, "--ckpt-every", min=0, help="Steps per checkpoint. [1000]"),
    keep: int | None = typer.Option(None, "--keep", min=1, help="Checkpoints kept. [3]"),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
    compile_: bool | None = typer.Option(
        None, "--compile/--no-compile",
        help="Train through torch.compile (faster; needs a C++ compiler on CPU). [--no-compile]",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the previous run in --out."),
    progress: bool | None = progress_option("the optimizer steps"),
    quiet: bool = quiet_option(),
) -> None:
    """Train a model (AdamW, warm-up, EMA, checkpoints). Launch with torchrun for DDP.

    Example: sdit train --preset sdit-small --dataset fashion-mnist --steps 20000 --out runs/sdit-small
    """
    given: dict[str, Any] = {
        "preset": preset, "dataset": dataset, "data_dir": str(data_dir) if data_dir else None,
        "batch_size": batch_size, "steps": steps, "epochs": epochs, "lr": lr, "warmup_steps": warmup_steps,
        "ema_decay": ema_decay, "weight_decay": weight_decay, "init_from": init_from, "seed": seed,
        "rate_penalty": rate_penalty,
        "log_every": log_every, "sample_every": sample_every,
        "ckpt_every": ckpt_every, "keep": keep, "device": device, "compile": compile_,
    }
    given = {k: v for k, v in given.items() if v is not None}
    check_number("--lr", lr, 0, 1, low_open=True)
    check_number("--ema-decay", ema_decay, 0, 1, high_open=True)
    check_number("--rate-penalty", rate_penalty, 0, 1e6)
    check_seed("--seed", seed)
    check_number("--batch-size", batch_size, 1, MAX_IMAGES)
    for option, value in (("--steps", steps), ("--warmup-steps", warmup_steps), ("--log-every", log_every),
                          ("--sample-every", sample_every), ("--ckpt-every", ckpt_every)):
        check_number(option, value, 0, MAX_STEPS)
    check_number("--epochs", epochs, 1, 10**6)
    check_number("--keep", keep, 1, 10**4)
    if steps is not None and epochs is not None:
        fail("give --steps or --epochs, not both")
    if device is not None and device not in ("cpu", "cuda"):
        fail(f"--device must be cpu or cuda, got {device!r}")
    try:
        if resume is not None:
            if out is not None and out.resolve() != resume.resolve():
                fail("--resume continues in its own run directory; drop --out or make it the same")
            if overwrite:
                fail("--overwrite and --resume exclude each other")
            run_dir = resume
            try:
                saved = load_run_config(resume)
            except TrainError as err:  # a missing or unreadable run is a bad input file
                fail(str(err), DATA_ERROR)
            config = resume_config(saved, **given)
        else:
            if out is None:
                fail("give --out RUN_DIR (or --resume RUN_DIR)")
            if preset is None:
                fail("give --preset (e.g. sdit-small or dit-small)")
            if steps is None and epochs is None:
                fail("give --steps or --epochs")
            run_dir = out
            config = TrainConfig(**given)
    except UnknownPresetError as err:
        fail(str(err))
    except ValueError as err:  # TrainError and TrainConfig's own checks
        fail(str(err))
    try:
        with _sigterm_as_interrupt():
            result = train(config, run_dir, resume=resume is not None, overwrite=overwrite,
                           progress=progress_wanted(progress, quiet))
    except UnknownPresetError as err:
        fail(str(err))
    except (DatasetError, CheckpointError) as err:
        fail(str(err), DATA_ERROR)
    except TrainError as err:  # NonFiniteError too: it names the last finite checkpoint
        fail(str(err))
    except TrainInterrupted as err:
        fail(str(err), INTERRUPTED)
    except KeyboardInterrupt:  # before the first step or after the last: say what the run directory holds
        fail(f"interrupted outside the training steps; {last_checkpoint_note(run_dir)}", INTERRUPTED)
    if result.rank == 0:
        loss = f"{result.final_loss:.4f}" if result.final_loss is not None else "n/a"
        speed = f"{result.images_per_s:.1f}" if result.images_per_s is not None else "n/a"
        rate = f", mean firing rate {result.mean_firing_rate:.4f}" if result.mean_firing_rate is not None else ""
        typer.echo(
            f"trained {config.preset} to step {result.step} in {result.wall_s:.1f} s: loss {loss}, "
            f"{speed} images/s{rate}; checkpoint {result.checkpoint}"
        )


# Help panels of the command's options (cli.common.in_panels); the rest are its main "Options".
PANELS = {"Data": ("--dataset", "--data-dir"),
          "Optimisation": ("--batch-size", "--steps", "--epochs", "--lr", "--warmup-steps", "--ema-decay",
                           "--weight-decay", "--rate-penalty", "--seed", "--device", "--compile/--no-compile"),
          OUTPUT_PANEL: ("--out", "--resume", "--log-every", "--sample-every", "--ckpt-every", "--keep", "--overwrite")}


def register(app: typer.Typer) -> None:
    app.command("train", cls=SditCommand)(in_panels(train_cmd, PANELS))
