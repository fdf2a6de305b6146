"""Copy a run's latest checkpoint into the repository with its provenance and a sample grid.

    .venv/bin/python scripts/ship_checkpoint.py runs/sdit-small-fmnist checkpoints/sdit-small-fmnist

Writes DEST/model.safetensors (the checkpoint file as training wrote it: EMA and raw
weights, metadata in its header), DEST/provenance.json (command, steps, times, losses,
firing rates, held-out epsilon error per timestep) and DEST/samples.png (EMA weights;
DDIM 50 steps, eta 0, seed 0 unless --method / --steps / --eta / --seed say otherwise).
With any other sampler, DEST/samples-ddim50-eta0.png holds the deterministic DDIM 50-step
grid as well, so that the two can be compared.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
from pathlib import Path
from typing import Any

import torch

from profiling.workloads import profile_workload
from sdit.artifacts import read_jsonl, save_image_grid, write_bytes, write_json
from sdit.checkpoint import load_checkpoint, load_model, load_training_state, training_state_path
from sdit.data import DatasetError, ImageSet, load_dataset
from sdit.diffusion import sample
from sdit.heap import retain_freed_memory
from sdit.quality.heldout import held_out_eps_mse
from sdit.workload import Workload

FLAGS = ("preset", "dataset", "batch_size", "steps", "lr", "warmup_steps", "ema_decay", "seed", "log_every",
         "sample_every", "ckpt_every", "keep")
SHIPPED_FILES = ("model.safetensors", "provenance.json", "samples.png", "samples-ddim50-eta0.png")
SWITCHES = ("compile",)  # boolean settings: the flag alone when true
SET_ONLY = ("rate_penalty", "init_from")  # flags a run.json holds at their off value (0, null) when not given


def train_command(train: dict[str, Any], out: str) -> str:
    """The ``sdit train`` command line that a run.json's settings correspond to."""
    parts = ["sdit", "train"]
    for key in FLAGS:
        if train.get(key) is not None:
            parts += [f"--{key.replace('_', '-')}", str(train[key])]
    for key in SET_ONLY:
        if train.get(key):
            parts += [f"--{key.replace('_', '-')}", str(train[key])]
    parts += [f"--{key}" for key in SWITCHES if train.get(key)]
    return shlex.join(parts + ["--out", out])


def sampler_label(method: str, steps: int, eta: float, seed: int) -> str:
    """How a grid was drawn, in words."""
    what = f"DDIM {steps} steps, eta {eta:g}" if method == "ddim" else "DDPM 1000 steps"
    return f"{what}, seed {seed}, EMA weights"


def load_test_split(dataset: str, data_dir: str | None) -> tuple[ImageSet | None, str]:
    """The test split from the run's data directory if it set one, else from the default place.

    Returns the images (None when there are none) and where they came from, or why not.
    """
    try:
        return load_dataset(dataset, "test", data_dir=data_dir), f"{dataset} test split ({data_dir or 'default place'})"
    except DatasetError as err:
        return None, f"no test split: {err}"


def main() -> None:
    retain_freed_memory()  # as the sdit command does (sdit/heap.py; SDIT_HEAP_RETAIN=0: glibc's defaults)
    logging.getLogger("torch._library.triton").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--num", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", choices=("ddim", "ddpm"), default="ddim", help="sampler of samples.png")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps of samples.png")
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM noise scale of samples.png, in [0, 1]")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--environment", required=True,
                        help="the machine and settings of the run (CPU, threads, other load, resumes with their "
                             "revisions, --compile), for provenance.json: facts, not a narrative")
    parser.add_argument("--stopped", default=None,
                        help="what stopped the run and when, if before its --steps (e.g. 'stopped by hand "
                             "(SIGTERM) at 09:37 UTC on 2026-12-03 after the step-21500 checkpoint')")
    args = parser.parse_args()
    if not 1 <= args.steps <= 1000:
        parser.error(f"--steps must be in [1, 1000], got {args.steps}")
    try:
        workload = (Workload.ddim(args.steps, eta=args.eta, batch_size=args.num, seed=args.seed)
                    if args.method == "ddim" else Workload.ddpm(batch_size=args.num, seed=args.seed))
    except ValueError as err:
        parser.error(str(err))
    if args.method == "ddpm" and args.eta:
        parser.error("eta applies to DDIM only; DDPM's noise is fixed")
    if args.dest.exists() and not args.dest.is_dir():
        parser.error(f"{args.dest} exists and is not a directory")
    taken = [p.name for p in (args.dest.glob("*") if args.dest.is_dir() else []) if p.name in SHIPPED_FILES]
    if taken and not args.overwrite:
        parser.error(f"{args.dest} already holds {', '.join(sorted(taken))}; pass --overwrite to replace them")

    ckpt = load_checkpoint(args.run_dir)
    run = json.loads((args.run_dir / "run.json").read_text())
    metrics = [m for m in read_jsonl(args.run_dir / "metrics.jsonl") if m["step"] <= ckpt.meta.step]
    train = run["train"]
    trained_s = sum(train["log_every"] * train["batch_size"] / m["images_per_s"] for m in metrics if m["images_per_s"])
    data_state = load_training_state(training_state_path(ckpt.path), expected_sha256=ckpt.sha256)["data"]
    model, meta = load_model(ckpt.path)
    torch.manual_seed(args.seed)
    images = sample(model, workload)
    grids = {"samples.png": (images, sampler_label(args.method, args.steps, args.eta, args.seed))}
    if (args.method, args.steps, args.eta) != ("ddim", 50, 0.0):
        plain = sample(model, Workload.ddim(50, batch_size=args.num, seed=args.seed))
        grids["samples-ddim50-eta0.png"] = (plain, sampler_label("ddim", 50, 0.0, args.seed))
    rate_workload = Workload.ddim(50, batch_size=8, seed=args.seed)  # the firing rates below are of this run
    run_profile = profile_workload(model, rate_workload, name=str(args.dest))
    rates = {r.name: r.firing_rate for r in run_profile.layers if r.firing_rate is not None}
    per = run_profile.per_image
    test, test_source = load_test_split(meta.dataset, train.get("data_dir"))
    provenance = {
        "command": train_command(train, str(args.run_dir)),
        "environment": args.environment,
        "preset": meta.preset,
        "dataset": meta.dataset,
        "steps": meta.step,
        "images_seen": meta.step * train["batch_size"],
        "epochs_seen": meta.step * train["batch_size"] / data_state["num_examples"],
        "training_time_s": round(trained_s, 1),
        "training_time_note": "sum of logged intervals (training steps only, no sampling or checkpointing)",
        "images_per_s_last_log": metrics[-1]["images_per_s"] if metrics else None,
        "final_loss": metrics[-1]["loss"] if metrics else None,
        "final_loss_note": "epsilon-MSE of the last logged training batch (raw weights)",
        "mean_loss_last_10_logs": sum(m["loss"] for m in metrics[-10:]) / max(len(metrics[-10:]), 1),
        "firing_rate_last_log": metrics[-1].get("firing_rate") if metrics else None,
        "firing_rate_ema_ddim50": rates or None,
        "mean_firing_rate_ema_ddim50": (per["spikes"] / per["neuron_updates"]) if per["neuron_updates"] else None,
        "firing_rate_note": "spikes / (neurons x T); *_ema_ddim50: EMA weights over a DDIM 50-step run, batch 8",
        "firing_rate_workload": rate_workload.to_dict(),
        "held_out_eps_mse": held_out_eps_mse(model, test.images[:64]) if test is not None else None,
        "held_out_eps_mse_note": (f"EMA weights; epsilon-MSE on the first {min(64, len(test.images))} images of the "
                                  f"{test_source}, noise seed 0, per timestep t" if test is not None else test_source),
        "git_revision": meta.git_revision,
        "run_json": run,
        "samples": "; ".join(f"{name}: {label}" for name, (_, label) in grids.items()),
    }
    if args.stopped:
        provenance["stopped"] = args.stopped
    args.dest.mkdir(parents=True, exist_ok=True)
    write_bytes(args.dest / "model.safetensors", ckpt.path.read_bytes(), overwrite=args.overwrite)
    for name, (grid, _) in grids.items():
        save_image_grid(grid, args.dest / name, overwrite=args.overwrite)
    for name in set(SHIPPED_FILES) - set(grids) - {"model.safetensors", "provenance.json"}:
        (args.dest / name).unlink(missing_ok=True)  # a grid of an earlier --overwrite'd shipment
    write_json(args.dest / "provenance.json", provenance, overwrite=args.overwrite)
    shown = ("steps", "training_time_s", "final_loss", "mean_firing_rate_ema_ddim50")
    print(json.dumps({k: provenance[k] for k in shown}))


if __name__ == "__main__":
    main()
