"""The optimizer, and the training state a checkpoint carries beside the weights.

A checkpoint's training state holds the optimizer, the EMA's counters, the RNG states, where in the
data the run stands, and the run's config (:func:`save`); :func:`restore` loads it back into a fresh
model, EMA and optimizer, refusing a run whose data changed. The file format is
:mod:`sdit.checkpoint`'s.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sdit import checkpoint
from sdit.checkpoint import CheckpointMeta
from sdit.ema import EMA
from sdit.training.config import TrainConfig, TrainError

# Devices with torch's single-pass ("fused") AdamW kernel; elsewhere the per-parameter loop.
_FUSED_ADAMW_DEVICES = ("cpu", "cuda")


def make_optimizer(params: list[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """The recipe's AdamW (torch's default betas and eps), run by torch's fused kernel where it has one.

    ``fused=True`` changes the implementation only: the same AdamW update in one pass per parameter
    instead of ~10 tensor ops each (on CPU about 25x faster for the small presets: the optimizer was
    ~5 % of a dit-small training step); values agree with the per-parameter loop to float rounding.
    """
    params = list(params)
    fused = bool(params) and all(p.device.type in _FUSED_ADAMW_DEVICES and p.is_floating_point() for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def load_optimizer_state(optimizer: torch.optim.AdamW, state: dict[str, Any]) -> None:
    """Load a saved AdamW state and keep this optimizer's implementation (fused or not).

    ``load_state_dict`` takes the saved groups' flags along with their numbers, so a checkpoint of an
    earlier, unfused run would otherwise resume unfused (and a fused one could not resume where the
    fused kernel is missing). The step counters move to where the fused kernel wants them (float32, on
    the parameter's device).
    """
    flags = [(group.get("fused"), group.get("foreach")) for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, (fused, foreach) in zip(optimizer.param_groups, flags, strict=True):
        group["fused"], group["foreach"] = fused, foreach
        for p in group["params"]:
            saved = optimizer.state.get(p, {})
            if fused and isinstance(saved.get("step"), Tensor):
                saved["step"] = saved["step"].to(dtype=torch.float32, device=p.device)


@dataclass(frozen=True)
class DataInfo:
    """The training images as a checkpoint records them: a resume must see the same ones."""

    num_examples: int
    batches_per_epoch: int
    images_sha256: str

    @classmethod
    def of(cls, images: Tensor, batches_per_epoch: int) -> DataInfo:
        """The record of ``images`` (N, C, H, W): their count and the sha256 of their bytes."""
        digest = hashlib.sha256(images.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()).hexdigest()
        return cls(images.shape[0], batches_per_epoch, digest)


def save(
    run_dir: Path, meta: CheckpointMeta, step: int, config: TrainConfig, data: DataInfo,
    model: nn.Module, ema: EMA, optimizer: torch.optim.Optimizer,
) -> Path:
    """Save the checkpoint of ``step`` (weights, EMA weights, training state) in ``run_dir``; returns its path."""
    epoch, batch = divmod(step, data.batches_per_epoch)
    return checkpoint.save_checkpoint(
        run_dir,
        replace(meta, step=step),
        model.state_dict(),
        ema.model.state_dict(),
        {
            "optimizer": optimizer.state_dict(),
            "ema": ema.state(),
            "rng": checkpoint.capture_rng_state(),
            "data": {"epoch": epoch, "batch_in_epoch": batch, "batches_per_epoch": data.batches_per_epoch,
                     "num_examples": data.num_examples, "batch_size": config.batch_size, "seed": config.seed,
                     "images_sha256": data.images_sha256},
            "train_config": asdict(config),
        },
        keep=config.keep,
    )


def restore(
    resume_from: checkpoint.Checkpoint, total_steps: int, config: TrainConfig, data: DataInfo,
    model: nn.Module, ema: EMA, optimizer: torch.optim.Optimizer, device: torch.device,
) -> int:
    """Load the checkpoint's weights, EMA, optimizer and RNG states; returns its step.

    Raises:
        TrainError: the data or the batch size changed, or the run is past ``total_steps``.
        sdit.checkpoint.CheckpointError: a training state that does not fit the model.
    """
    state_path = checkpoint.training_state_path(resume_from.path)
    state = checkpoint.load_training_state(state_path, expected_sha256=resume_from.sha256,
                                           schema=checkpoint.TRAINING_STATE_SCHEMA)
    data_state = state["data"]
    if data_state["images_sha256"] != data.images_sha256 or data_state["batch_size"] != config.batch_size:
        raise TrainError(
            f"the run saw {data_state['num_examples']} images in batches of {data_state['batch_size']}, "
            f"now {data.num_examples} in batches of {config.batch_size}; the data changed"
        )
    checkpoint.load_state_into(model, resume_from.model_state, resume_from.path)
    try:
        ema.load_state(state["ema"], {k: v.to(device) for k, v in resume_from.ema_state.items()})
        load_optimizer_state(optimizer, state["optimizer"])
        checkpoint.restore_rng_state(state["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
        raise checkpoint.CheckpointError(
            f"training state {state_path} does not fit the run: {checkpoint._one_line(err)}") from None
    start_step = int(state["step"])
    if start_step > total_steps:
        raise TrainError(f"the run is at step {start_step}, past the {total_steps} steps asked for")
    return start_step
