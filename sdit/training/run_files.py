"""The files a training run writes into its directory, besides checkpoints, and reading them back.

A run directory holds ``run.json`` (the run's config, model config, revision, world size),
``metrics.jsonl`` (one record per logging interval), ``samples/step-N.png`` (sample grids),
``checkpoints/`` (:mod:`sdit.checkpoint`) and, at the end, ``summary.json``. Every write goes
through :mod:`sdit.artifacts`; only rank 0 writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sdit import artifacts, checkpoint, rundir
from sdit.checkpoint import CheckpointMeta
from sdit.config import config_to_dict
from sdit.diffusion import Diffusion, sample
from sdit.training.config import TrainConfig
from sdit.workload import Workload

RUN_FILE = rundir.RUN_FILE
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
SAMPLES_DIR = "samples"


def open_run(
    run_dir: Path, config: TrainConfig, meta: CheckpointMeta, resumed: bool, overwrite: bool, world_size: int
) -> None:
    """Write ``run.json``; on resume drop metrics recorded after the checkpoint."""
    if resumed:
        metrics = run_dir / METRICS_FILE
        if metrics.is_file():
            kept = [r for r in artifacts.read_jsonl(metrics) if r.get("step", 0) <= meta.step]
            artifacts.write_jsonl(metrics, kept, overwrite=True)
    elif overwrite and rundir.is_sdit_run(run_dir):
        rundir.clear_run(run_dir)
    rundir.write_marker(run_dir)
    run = {
        "train": asdict(config),
        "model": config_to_dict(meta.config),
        "git_revision": meta.git_revision,
        "world_size": world_size,
        "resumed_at_step": meta.step if resumed else None,
    }
    artifacts.write_json(run_dir / RUN_FILE, run, overwrite=True)


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Add one metrics record to ``metrics.jsonl``."""
    artifacts.append_jsonl(run_dir / METRICS_FILE, record)


def write_samples(model: nn.Module, diffusion: Diffusion, config: TrainConfig, run_dir: Path, step: int,
                  device: torch.device) -> None:
    """A DDIM sample grid of ``config.sample_num`` images at ``samples/step-N.png``."""
    workload = Workload.ddim(config.sample_steps, batch_size=config.sample_num, seed=config.seed)
    grid = sample(model, workload, diffusion=diffusion, device=device)  # (n, C, H, W)
    artifacts.save_image_grid(grid, run_dir / SAMPLES_DIR / f"step-{step:08d}.png", overwrite=True)


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """Write ``summary.json`` (paths as strings)."""
    data = {k: (str(v) if isinstance(v, Path) else v) for k, v in summary.items()}
    artifacts.write_json(run_dir / SUMMARY_FILE, data, overwrite=True)


def iter_metrics(run_dir: Path | str) -> Iterator[dict[str, Any]]:
    """The metrics records of a run, in order."""
    path = Path(run_dir) / METRICS_FILE
    if path.is_file():
        yield from artifacts.read_jsonl(path)


def last_checkpoint_note(run_dir: Path) -> str:
    """Where a stopped run can continue from: its ``latest`` checkpoint, or that there is none (one clause)."""
    try:
        latest = checkpoint.resolve_checkpoint(run_dir)
    except checkpoint.CheckpointError:
        return f"no checkpoint was saved; start again with the same command plus --overwrite (in {run_dir})"
    step = checkpoint._step_of(latest)
    return f"the last checkpoint is step {step} ({latest}); resume with: sdit train --resume {run_dir}"
