"""Resolve what a user names on the command line: a preset or a checkpoint."""

from __future__ import annotations

import hashlib
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


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
        from sdit.authors import is_authors_file, load_authors_model
        from sdit.checkpoint import load_model, resolve_checkpoint

        if is_authors_file(target):  # a torch.save of the authors' code: {"model", "opt", "args"}
            model, description = load_authors_model(target, device=device)
            return Target(label=target, source="checkpoint", model=model, description=description,
                          weights_sha256=_file_sha256(Path(target)))

        model, meta = load_model(target, device=device)
        return Target(label=target, source="checkpoint", model=model,
                      description=f"{meta.preset} at step {meta.step} (EMA weights)",
                      weights_sha256=_file_sha256(resolve_checkpoint(target)))
    raise TargetError(f"{UnknownPresetError(target)} (the target is neither a preset nor an existing checkpoint path)")
