"""Fused element-wise work between the GEMMs of an SDiT block (issue 18), with the same results.

The profiler (``profiling.counter.LayerCounter``) counts aten ops through a
``TorchDispatchMode``; a fused path would count differently (other ops, other
shapes), so every function here takes its fused path only when nothing counts
(:func:`counting`: no Python dispatch mode, no jit / fx trace as fvcore's counter
uses) and otherwise runs the plain formulation the profiler was written against.
Both give the same values: the fused forward runs the same floating-point
operations on the same elements, only without the intermediate tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing
from torch.utils._python_dispatch import _get_current_dispatch_mode

from sdit.models import cpu_kernels


def counting() -> bool:
    """True while something counts the ops: a ``TorchDispatchMode`` (the profiler's op counter,
    ``FlopCounterMode``, a recorder), or a ``torch.jit`` / ``torch.fx`` trace (fvcore's counter).

    False inside ``torch.compile`` (which traces and fuses the graph itself; the profiler runs eagerly).
    """
    if torch.compiler.is_compiling():
        return False
    return _get_current_dispatch_mode() is not None or torch.jit.is_tracing() or is_fx_symbolic_tracing()


def token_shift(x: Tensor) -> Tensor:
    """x_{n-1} along the token axis, zero at n = 0: (B', M, D) -> (B', M, D)."""
    return nn.functional.pad(x, (0, 0, 1, -1))


def _delta(x: Tensor) -> Tensor:
    """x_n - x_{n-1} (x_0 at n = 0) without materialising the shifted tensor: (B', M, D)."""
    delta = torch.empty_like(x)  # (B', M, D)
    torch.sub(x[:, 1:], x[:, :-1], out=delta[:, 1:])
    delta[:, 0] = x[:, 0]  # x_0 - 0
    return delta


def _mixes_out(x: Tensor, delta: Tensor, mus: tuple[Tensor, ...]) -> list[Tensor]:
    """x_{n-1} + mu * delta_n per mu, written into fresh tensors (the same operations as ``addcmul``)."""
    outs = []
    for mu in mus:
        out = torch.empty_like(x)  # (B', M, D)
        torch.addcmul(x[:, :-1], delta[:, 1:], mu, out=out[:, 1:])
        torch.mul(delta[:, 0], mu, out=out[:, 0])  # 0 + mu * x_0
        outs.append(out)
    return outs


class _ShiftMixes(torch.autograd.Function):
    """Token-shift mixes m_j = x_{n-1} + mu_j (x_n - x_{n-1}) with a hand-written backward.

    dL/dx_n = H_n + (G - H)_{n+1} with G = sum_j g_j, H = sum_j mu_j g_j (the last token has no n + 1);
    dL/dmu_j = sum over rows of g_j * delta.
    """

    @staticmethod
    def forward(ctx, x: Tensor, *mus: Tensor) -> tuple[Tensor, ...]:
        delta = _delta(x)  # (B', M, D)
        ctx.save_for_backward(delta, *mus)
        return tuple(_mixes_out(x, delta, mus))

    @staticmethod
    def backward(ctx, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        delta, *mus = ctx.saved_tensors
        pairs = [(g, mu) for g, mu in zip(grads, mus) if g is not None]
        grad_mus = [None if g is None else (g * delta).sum(dim=(0, 1)) for g in grads]  # (D,) each
        if not pairs:
            return (None, *grad_mus)
        g_sum = pairs[0][0].clone()  # G, (B', M, D)
        h = pairs[0][0] * pairs[0][1]  # H, (B', M, D)
        for g, mu in pairs[1:]:
            g_sum.add_(g)
            h.addcmul_(g, mu)
        g_sum.sub_(h)  # G - H
        h[:, :-1].add_(g_sum[:, 1:])  # dL/dx
        return (h, *grad_mus)


def shift_mixes(x: Tensor, mus: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """RWKV's token-shift mixes mu * x_n + (1 - mu) * x_{n-1}, one per ``mu``: (B', M, D) -> (B', M, D) each.

    Computed as x_{n-1} + mu * (x_n - x_{n-1}) (the difference shared by all mixes). Under a counting
    dispatch mode or torch.compile the plain form (pad, sub, addcmul); otherwise without the shifted tensor, through
    :class:`_ShiftMixes` under autograd.
    """
    if counting() or torch.compiler.is_compiling():  # compiled: inductor fuses the plain form itself
        shifted = token_shift(x)  # (B', M, D)
        delta = x - shifted  # (B', M, D)
        return tuple(torch.addcmul(shifted, delta, mu) for mu in mus)
    if torch.is_grad_enabled() and (x.requires_grad or any(mu.requires_grad for mu in mus)):
        return _ShiftMixes.apply(x, *mus)
    if x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 3 and cpu_kernels.available():
        return tuple(shift_mixes_cpu(x.contiguous(), torch.stack(mus).to(x.dtype)).unbind(0))
    return tuple(_mixes_out(x, _delta(x), mus))


@torch.library.custom_op("sdit::shift_mixes", mutates_args=())
def shift_mixes_cpu(x: Tensor, mus: Tensor) -> Tensor:
    """The C kernel of the mixes (no autograd): x (B', M, D), mus (J, D) -> (J, B', M, D)."""
    rows, tokens, dim = x.shape
    out = x.new_empty(mus.shape[0], rows, tokens, dim)  # (J, B', M, D)
    mus = mus.contiguous()
    cpu_kernels.load().sdit_shift_mixes(
        cpu_kernels.ptr(x), cpu_kernels.ptr(mus), cpu_kernels.ptr(out), rows, tokens, dim, mus.shape[0],
        torch.get_num_threads(),
    )
    return out


@shift_mixes_cpu.register_fake
def _(x, mus):
    return x.new_empty(mus.shape[0], *x.shape)
