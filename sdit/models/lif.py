"""A multi-step LIF neuron with a one-pass CPU kernel, counted and reported as spikingjelly's ``LIFNode``.

:class:`LIFNode` subclasses ``spikingjelly.activation_based.neuron.LIFNode`` and keeps
its name, state, hooks and reset: the profiler counts it like any LIFNode (its output
spikes), and checkpoints do not change (a LIF has no parameters). Only its multi-step
forward differs, and only where the fast path covers the configuration (CPU, float32,
hard reset, ``decay_input``, ATan surrogate, no ``detach_reset``, no ``store_v_seq``,
no explicit neuron precision); everything else runs spikingjelly's own code.

The fast path runs the LIF kernel of ``cpu_kernels.c`` (:mod:`sdit.models.cpu_kernels`),
one pass over the (T, ...) input per call with spikingjelly's arithmetic (bit-identical
spikes and membranes; the gradient follows spikingjelly's CPU backward formula), instead
of ~9 whole-tensor passes per time step, inside the custom ops
``torch.ops.sdit.lif_forward`` / ``lif_backward`` (with fake implementations, so
``torch.compile`` keeps them in its graph). Without the kernels (no C compiler,
``SDIT_CPU_KERNELS=0``) the neuron runs spikingjelly's code.
"""

from __future__ import annotations

import functools
import importlib
import logging

import torch
from spikingjelly.activation_based import neuron, surrogate
from torch import Tensor

from sdit.models.cpu_kernels import available, load, ptr


# ---- custom ops --------------------------------------------------------------------------------------------
@torch.library.custom_op("sdit::lif_forward", mutates_args=())
def lif_forward(
    x: Tensor, v: Tensor | None, v_init: float, tau: float, v_threshold: float, v_reset: float, store_h: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Spikes (T, ...), final membrane (...) and, with ``store_h``, the charged membranes (T, ...).

    The membrane before step 0 is ``v`` (...), or ``v_init`` everywhere when ``v`` is None.
    """
    x = x.contiguous()  # (T, ...)
    steps, n = x.shape[0], x[0].numel()
    v_in = None if v is None else v.contiguous()  # (...)
    v_out = x.new_empty(x.shape[1:])  # (...)
    spikes = torch.empty_like(x)  # (T, ...)
    h = torch.empty_like(x) if store_h else x.new_empty(0)
    load().sdit_lif_forward(
        ptr(x), ptr(v_in), ptr(v_out), ptr(spikes), ptr(h) if store_h else None, steps, n,
        tau, v_threshold, v_reset, v_init, torch.get_num_threads(),
    )  # fmt: skip
    return spikes, v_out, h


@lif_forward.register_fake
def _(x, v, v_init, tau, v_threshold, v_reset, store_h):
    return torch.empty_like(x), x.new_empty(x.shape[1:]), (torch.empty_like(x) if store_h else x.new_empty(0))


@torch.library.custom_op("sdit::lif_backward", mutates_args=())
def lif_backward(
    grad_spikes: Tensor, grad_v: Tensor | None, h: Tensor, tau: float, v_threshold: float, v_reset: float,
    alpha: float,
) -> tuple[Tensor, Tensor]:
    """Gradients of the input (T, ...) and of the initial membrane (...)."""
    grad_spikes, h = grad_spikes.contiguous(), h.contiguous()
    gv = None if grad_v is None else grad_v.contiguous()
    steps, n = h.shape[0], h[0].numel()
    grad_x = torch.empty_like(h)  # (T, ...)
    grad_v0 = h.new_empty(h.shape[1:])  # (...)
    load().sdit_lif_backward(
        ptr(grad_spikes), ptr(gv), ptr(h), ptr(grad_x), ptr(grad_v0), steps, n,
        tau, v_threshold, v_reset, alpha, torch.get_num_threads(),
    )  # fmt: skip
    return grad_x, grad_v0


@lif_backward.register_fake
def _(grad_spikes, grad_v, h, tau, v_threshold, v_reset, alpha):
    return torch.empty_like(h), h.new_empty(h.shape[1:])


def lif_multi_step(
    x: Tensor, v: Tensor | float, tau: float, v_threshold: float, v_reset: float, alpha: float
) -> tuple[Tensor, Tensor]:
    """Run the kernel on (T, ...) inputs from membrane ``v`` ((...) or one value for all).

    Returns:
        Spikes (T, ...) and the final membrane (...).
    """
    v_tensor = v if isinstance(v, Tensor) else None
    v_init = 0.0 if v_tensor is not None else float(v)
    tracked = x.requires_grad or (v_tensor is not None and v_tensor.requires_grad)
    if not (torch.is_grad_enabled() and tracked):
        spikes, v_out, _ = lif_forward(x, v_tensor, v_init, tau, v_threshold, v_reset, False)
        return spikes, v_out
    spikes, v_out, _ = _LIFWithAlpha.apply(x, v_tensor, v_init, tau, v_threshold, v_reset, alpha)
    return spikes, v_out


class _LIFWithAlpha(torch.autograd.Function):
    """Autograd around the two custom ops (the surrogate's alpha is a backward-only parameter)."""

    @staticmethod
    def forward(
        ctx, x: Tensor, v: Tensor | None, v_init: float, tau: float, v_threshold: float, v_reset: float, alpha: float
    ):
        spikes, v_out, h = lif_forward(x, v, v_init, tau, v_threshold, v_reset, True)
        ctx.save_for_backward(h)
        ctx.params = (tau, v_threshold, v_reset, alpha)
        ctx.mark_non_differentiable(h)
        ctx.set_materialize_grads(False)
        return spikes, v_out, h

    @staticmethod
    def backward(ctx, grad_spikes: Tensor | None, grad_v: Tensor | None, _grad_h: Tensor | None):
        (h,) = ctx.saved_tensors
        if grad_spikes is None:
            grad_spikes = torch.zeros_like(h)
        grad_x, grad_v0 = lif_backward(grad_spikes, grad_v, h, *ctx.params)
        return grad_x, (grad_v0 if ctx.needs_input_grad[1] else None), None, None, None, None, None


# spikingjelly registers its neuron kernels as torch ``triton_op``s when a neuron first runs; without
# Triton, torch then logs "Triton not available" (a warning, once per kernel) in the user's session.
_NEURON_KERNELS = ("spikingjelly._ops.lif", "spikingjelly._ops.if_", "spikingjelly._ops.plif")


@functools.cache
def load_neuron_kernels_quietly() -> None:
    """Import spikingjelly's neuron kernels once with torch's Triton-discovery log silenced
    (called when a model's neuron is built and when the profiler starts)."""
    log = logging.getLogger("torch._library.triton")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        for module in _NEURON_KERNELS:
            try:
                importlib.import_module(module)
            except ImportError:  # another spikingjelly layout: its neurons load their kernels themselves
                continue
    finally:
        log.setLevel(level)


class LIFNode(neuron.LIFNode):
    """spikingjelly's ``LIFNode`` (same class name, same counting) with the one-pass CPU kernel in multi-step mode."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        load_neuron_kernels_quietly()
        super().__init__(*args, **kwargs)

    def _fast(self, x_seq: Tensor) -> bool:
        sf = self.surrogate_function
        return (
            x_seq.device.type == "cpu"
            and x_seq.dtype == torch.float32
            and type(sf) is surrogate.ATan
            and getattr(sf, "spiking", True)
            and isinstance(sf.alpha, (int, float))
            and self.decay_input
            and self.v_reset is not None
            and not self.detach_reset
            and not self.store_v_seq
            and self._neuron_precision is None
            and x_seq.dim() >= 2
            and available()
        )

    def multi_step_forward(self, x_seq: Tensor, *args: Tensor, **kwargs: object) -> Tensor:
        if args or kwargs or not self._fast(x_seq):
            return super().multi_step_forward(x_seq, *args, **kwargs)
        v = self._memories["v"]
        if not isinstance(v, float):  # a carried membrane (or one of another shape: spikingjelly resets it)
            v = self.materialize_states((x_seq,), tuple(self._memories.values()), "m")[0]
            if v.dtype != torch.float32 or v.device.type != "cpu":
                return super().multi_step_forward(x_seq)
        alpha = float(self.surrogate_function.alpha)
        spikes, v_out = lif_multi_step(x_seq, v, float(self.tau), float(self.v_threshold), float(self.v_reset), alpha)
        self._memories["v"] = v_out
        self.v_seq = None
        return spikes
