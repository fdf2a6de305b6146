"""Resolve what a user names on the command line: a preset or a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sdit.config import PRESETS
from sdit.models import build_model


class TargetError(ValueError):
    """Neither a preset name nor an existing checkpoint path."""


@dataclass(frozen=True)
class Target:
    """A model to run, and where it came from."""

    label: str  # preset name or checkpoint path, as the user gave it
    source: str  # "preset" (untrained weights) or "checkpoint"
    model: nn.Module


def load_target(target: str, device: torch.device | str = "cpu") -> Target:
    """A preset builds an untrained model; an existing path loads a checkpoint (EMA weights).

    Raises:
        TargetError: ``target`` is neither.
        sdit.checkpoint.CheckpointError: the checkpoint is missing pieces or corrupt.
    """
    if target in PRESETS:
        return Target(label=target, source="preset", model=build_model(target).to(device))
    if Path(target).exists():
        from sdit.checkpoint import load_model

        model, _meta = load_model(target, device=device)
        return Target(label=target, source="checkpoint", model=model)
    raise TargetError(
        f"{target!r} is neither a preset ({', '.join(PRESETS)}) nor an existing checkpoint path"
    )
