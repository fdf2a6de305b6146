"""The metrics record of one logging interval, and its short form on the progress bar.

A record (one line of ``metrics.jsonl``) holds the step, the epoch, the mean diffusion loss of the
interval (the firing-rate penalty left out), the learning rate, the training speed in images per
second, and the firing rates of the LIF layers, per layer and pooled; loss and spike counts are summed
over ranks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sdit import distributed
from sdit.training.firing_rate import FiringRateMeter, rates_from_totals


def log_record(
    ctx: distributed.DistContext,
    meter: FiringRateMeter,
    loss_sum: Tensor,
    steps: int,
    done: int,
    epoch: int,
    lr: float,
    images: int,
    elapsed_s: float,
) -> dict[str, Any]:
    """One metrics record; sums loss and spike counts over ranks (one all-reduce)."""
    totals = meter.totals(loss_sum.device)  # (2, K)
    packed = torch.cat([loss_sum.reshape(1), totals.reshape(-1)])
    distributed.all_reduce_sum(ctx, packed)
    per_layer, mean = rates_from_totals(meter.names, packed[1:].reshape(2, -1).cpu())
    return {
        "step": done,
        "epoch": epoch,
        "loss": float(packed[0]) / (steps * ctx.world_size),
        "lr": lr,
        "images_per_s": images / elapsed_s if elapsed_s > 0 else None,
        "mean_firing_rate": mean,
        "firing_rate": per_layer,
    }


def postfix(record: dict[str, Any]) -> dict[str, str]:
    """The progress bar's view of a record: loss, images per second and mean firing rate."""
    post = {"loss": f"{record['loss']:.4f}"}
    if record["images_per_s"] is not None:
        post["img/s"] = f"{record['images_per_s']:.1f}"
    if record["mean_firing_rate"] is not None:
        post["fr"] = f"{record['mean_firing_rate']:.4f}"
    return post
