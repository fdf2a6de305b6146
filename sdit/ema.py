"""Exponential moving average of model weights (sampling uses the average)."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


class EMA:
    """A frozen copy of a model whose floating-point weights track the model's.

    After update n (0-based) the decay is ``min(decay, (1 + n) / (10 + n))``: the usual
    warm-up (timm, diffusers) so that a short run's average is not dominated by the
    random initialisation, as it would be with 0.9999 from the first step. Buffers and
    non-float tensors are copied, not averaged.

    Create it before registering hooks on ``model``: the copy would carry them along.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next update will use."""
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """ema <- d * ema + (1 - d) * model, for every floating-point parameter and buffer."""
        d = self.current_decay()
        averaged: list[Tensor] = []
        current: list[Tensor] = []
        for e, m in zip(self.model.state_dict().values(), model.state_dict().values(), strict=True):
            if e.is_floating_point():
                averaged.append(e)
                current.append(m.detach())
            else:
                e.copy_(m)
        if averaged:
            torch._foreach_lerp_(averaged, current, 1.0 - d)
        self.num_updates += 1

    def state(self) -> dict[str, int | float]:
        """The counters to save beside the EMA weights."""
        return {"decay": self.decay, "num_updates": self.num_updates}

    def load_state(self, state: dict[str, int | float], weights: dict[str, Tensor]) -> None:
        """Restore counters and weights saved by :meth:`state` and a checkpoint."""
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        self.model.load_state_dict(weights, strict=True)
