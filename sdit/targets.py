"""Resolve what a user names on the command line: a preset or a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sdit.config import PRESETS, UnknownPresetError
from sdit.models import build_model


class TargetError(ValueError):
    """Neither a preset name nor an existing checkpoint path."""


@dataclass(frozen=True)
class Target:
    """A model to run, and where it came from."""

    label: str  # preset name or checkpoint path, as the user gave it
    source: str  # "preset" (untrained weights) or "checkpoint"
    model: nn.Module
    description: str  # e.g. "preset sdit-small (untrained)" or "dit-small at step 24000 (EMA weights)"
    weights_sha256: str | None = None  # sha256 of the weights file a checkpoint came from; None for a preset


def _looks_like_path(target: str) -> bool:
    return "/" in target or target.endswith((".safetensors", ".pt", ".bin", ".ckpt"))


def load_target(target: str, device: torch.device | str = "cpu") -> Target:
    """A preset builds an untrained model; a path loads a checkpoint (EMA weights), or an authors' ``.pt``
    checkpoint (their raw weights, :mod:`sdit.authors`).

    Raises:
        TargetError: ``target`` is neither a preset nor something that looks like a path.
        sdit.checkpoint.CheckpointError: the checkpoint is missing, incomplete or corrupt.
        sdit.authors.AuthorsCheckpointError: an authors' file that is unsafe or does not fit their layout.
    """
    if target in PRESETS:
        model = build_model(target).to(device)
        return Target(label=target, source="preset", model=model, description=f"preset {target} (untrained)")
    if Path(target).exists() or _looks_like_path(target):
        from sdit.authors import authors_model, is_authors_file, load_authors_checkpoint
        from sdit.checkpoint import load_checkpoint, model_from_checkpoint

        if is_authors_file(target):  # a torch.save of the authors' code: {"model", "opt", "args"}
            authors = load_authors_checkpoint(target)
            model, description = authors_model(authors, device=device)
            return Target(label=target, source="checkpoint", model=model, description=description,
                          weights_sha256=authors.sha256)

        ckpt = load_checkpoint(target)  # its sha256 is of the whole weights file, read once
        return Target(label=target, source="checkpoint", model=model_from_checkpoint(ckpt, device),
                      description=f"{ckpt.meta.preset} at step {ckpt.meta.step} (EMA weights)",
                      weights_sha256=ckpt.sha256)
    raise TargetError(f"{UnknownPresetError(target)} (the target is neither a preset nor an existing checkpoint path)")
