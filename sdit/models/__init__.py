"""Model construction from configs or preset names."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from sdit.config import DiTConfig, ModelConfig, SDiTConfig, get_preset
from sdit.models.dit import DiT
from sdit.models.sdit import SDiT

__all__ = ["DiT", "ParamCount", "SDiT", "build_model", "count_params"]


def build_model(config: ModelConfig | str) -> SDiT | DiT:
    """Instantiate the model for a config or a preset name."""
    if isinstance(config, str):
        config = get_preset(config)
    if isinstance(config, SDiTConfig):
        return SDiT(config)
    if isinstance(config, DiTConfig):
        return DiT(config)
    raise TypeError(f"not a model config: {type(config).__name__}")


@dataclass(frozen=True)
class ParamCount:
    """Parameter counts of a model; ``params`` includes frozen ones (DiT's position table)."""

    params: int
    trainable_params: int


def count_params(model: nn.Module) -> ParamCount:
    """Count all and trainable parameters."""
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return ParamCount(params=params, trainable_params=trainable)
