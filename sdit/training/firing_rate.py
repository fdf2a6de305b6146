"""Firing rates of the spiking layers during training, counted on the device.

The firing rate of a LIF layer is its mean spikes per neuron per spiking time step (its output is
0/1 over (T, B, ...)); the mean firing rate pools all LIF layers: total spikes over total
neuron-steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from spikingjelly.activation_based import neuron
from torch import Tensor, nn


class FiringRateMeter:
    """Counts spikes of every spikingjelly neuron layer through forward hooks.

    Counts stay on the device, in one preallocated (2, K) float64 tensor that the
    hooks update in place: nothing synchronises until :meth:`totals` is read, and
    under ``torch.compile`` the hooks trace into the graph without a Python value
    that changes per call (which would recompile every step).

    With ``differentiable=True`` it also keeps, for the forward in progress, each layer's spike sum with its
    graph, so that :meth:`pooled_rate` can enter the loss (the firing-rate penalty).
    """

    def __init__(self, model: nn.Module, differentiable: bool = False) -> None:
        neurons = [(name, m) for name, m in model.named_modules() if isinstance(m, neuron.BaseNode)]
        self.names = [name for name, _ in neurons]
        self.differentiable = differentiable
        device = next(model.parameters(), torch.empty(0)).device
        self._counts = torch.zeros(2, len(neurons), dtype=torch.float64, device=device)  # (2, K): spikes, steps
        self._live: list[tuple[Tensor, int]] = []  # (spike sum with its graph, neuron-steps) of this forward
        self._handles = [m.register_forward_hook(self._hook(i)) for i, (_, m) in enumerate(neurons)]

    def _hook(self, index: int) -> Callable[..., None]:
        def count(module: nn.Module, inputs: Any, output: Tensor) -> None:
            self._counts[0, index] += output.detach().sum(dtype=torch.float64)  # output (T, B, ...) of 0/1
            self._counts[1, index] += output.numel()
            if self.differentiable:
                self._live.append((output.float().sum(), output.numel()))

        return count

    def pooled_rate(self) -> Tensor:
        """Spikes / neuron-steps over every LIF layer of the forwards since the last call, with the graph
        (the surrogate gradient flows through it); clears them. 0 for a model without LIF layers."""
        if not self._live:
            return torch.zeros(())
        spikes = torch.stack([s for s, _ in self._live]).sum()
        rate = spikes / sum(n for _, n in self._live)
        self._live = []
        return rate

    def totals(self, device: torch.device) -> Tensor:
        """(2, K): spikes and neuron-steps per layer since the last reset."""
        return self._counts.to(device, copy=True)

    def reset(self) -> None:
        self._counts.zero_()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def rates_from_totals(names: list[str], totals: Tensor) -> tuple[dict[str, float], float | None]:
    """Per-layer firing rates and the pooled mean from (2, K) totals."""
    spikes, steps = totals.tolist() if totals.numel() else ([], [])
    per_layer = {n: s / c for n, s, c in zip(names, spikes, steps, strict=True) if c > 0}
    mean = sum(spikes) / sum(steps) if names and sum(steps) > 0 else None
    return per_layer, mean
