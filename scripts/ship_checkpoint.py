"""Copy a run's latest checkpoint into the repository with its provenance and a sample grid.

    .venv/bin/python scripts/ship_checkpoint.py runs/sdit-small-fmnist checkpoints/sdit-small-fmnist

Writes DEST/model.safetensors (the checkpoint file as training wrote it: EMA and raw
weights, metadata in its header), DEST/provenance.json (command, steps, times, losses,
firing rates) and DEST/samples.png (DDIM 50 steps, seed 0, EMA weights).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
from pathlib import Path
from typing import Any

import torch

from profiling.workloads import profile_sampling
from sdit.artifacts import read_jsonl, save_image_grid, write_bytes, write_json
from sdit.checkpoint import load_checkpoint, load_model, load_training_state, training_state_path
from sdit.diffusion import Diffusion, sample

FLAGS = ("preset", "dataset", "batch_size", "steps", "lr", "warmup_steps", "ema_decay", "seed", "log_every",
         "sample_every", "ckpt_every", "keep")
SWITCHES = ("compile",)  # boolean settings: the flag alone when true


def train_command(train: dict[str, Any], out: str) -> str:
    """The ``sdit train`` command line that a run.json's settings correspond to."""
    parts = ["sdit", "train"]
    for key in FLAGS:
        if train.get(key) is not None:
            parts += [f"--{key.replace('_', '-')}", str(train[key])]
    parts += [f"--{key}" for key in SWITCHES if train.get(key)]
    return shlex.join(parts + ["--out", out])


def main() -> None:
    logging.getLogger("torch._library.triton").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--num", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--environment", required=True,
                        help="how the run ran (threads, CPU sharing, resumes, --compile), for provenance.json")
    parser.add_argument("--stopped", default=None, help="why and when the run stopped, if before its --steps")
    args = parser.parse_args()

    ckpt = load_checkpoint(args.run_dir)
    run = json.loads((args.run_dir / "run.json").read_text())
    metrics = [m for m in read_jsonl(args.run_dir / "metrics.jsonl") if m["step"] <= ckpt.meta.step]
    train = run["train"]
    trained_s = sum(train["log_every"] * train["batch_size"] / m["images_per_s"] for m in metrics if m["images_per_s"])
    data_state = load_training_state(training_state_path(ckpt.path), expected_sha256=ckpt.sha256)["data"]
    model, meta = load_model(ckpt.path)
    torch.manual_seed(args.seed)
    cfg = model.config
    images = sample(model, Diffusion(), (args.num, cfg.in_channels, cfg.image_size, cfg.image_size),
                    method="ddim", num_steps=50, seed=args.seed)
    run_profile = profile_sampling(model, name=str(args.dest), sample_steps=50, batch_size=8, seed=args.seed)
    rates = {r.name: r.firing_rate for r in run_profile.layers if r.firing_rate is not None}
    per = run_profile.per_image
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
        "git_revision": meta.git_revision,
        "run_json": run,
        "samples": "samples.png: DDIM 50 steps, eta 0, seed 0, EMA weights",
    }
    if args.stopped:
        provenance["stopped"] = args.stopped
    args.dest.mkdir(parents=True, exist_ok=True)
    write_bytes(args.dest / "model.safetensors", ckpt.path.read_bytes(), overwrite=args.overwrite)
    save_image_grid(images, args.dest / "samples.png", overwrite=args.overwrite)
    write_json(args.dest / "provenance.json", provenance, overwrite=args.overwrite)
    shown = ("steps", "training_time_s", "final_loss", "mean_firing_rate_ema_ddim50")
    print(json.dumps({k: provenance[k] for k in shown}))


if __name__ == "__main__":
    main()
