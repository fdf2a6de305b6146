"""The RWKV-4 WKV operator over (batch, tokens, channels).

The paper's Eq. (1) has a typo (the denominator repeats ``v_i``); we use RWKV-4's
formula, per channel c and token t (ARCHITECTURE.md §1):

    wkv_t = (sum_{i<t} e^{-(t-1-i) w + k_i} v_i + e^{u + k_t} v_t)
          / (sum_{i<t} e^{-(t-1-i) w + k_i}     + e^{u + k_t})

with ``w = exp(time_decay) > 0`` and ``u = time_first``.

:func:`wkv` is the one the model runs: a recurrence over tokens that carries the
numerator and denominator scaled by their running maximum exponent, so no
``exp`` ever sees a positive argument and large ``k`` cannot overflow.
:func:`wkv_direct` transcribes the formula literally (O(N^2) memory, unstable for
large ``k``) and exists only as the reference the tests compare against.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def wkv(time_decay: Tensor, time_first: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Numerically stable, differentiable WKV.

    Args:
        time_decay: (D,) log of the decay rate; ``w = exp(time_decay)``.
        time_first: (D,) bonus ``u`` of the current token.
        k: (B, N, D) keys.
        v: (B, N, D) values.

    Returns:
        (B, N, D) in the dtype of ``v``; computed in at least float32.
    """
    out_dtype = v.dtype
    dtype = torch.promote_types(v.dtype, torch.float32)
    w = torch.exp(time_decay.to(dtype))  # (D,)
    u = time_first.to(dtype)  # (D,)
    k = k.to(dtype)
    v = v.to(dtype)
    batch, tokens, dim = k.shape
    # State: a = sum e^{x_i - p} v_i, b = sum e^{x_i - p}, p = running max exponent.
    a = k.new_zeros(batch, dim)  # (B, D)
    b = k.new_zeros(batch, dim)  # (B, D)
    p = k.new_full((batch, dim), torch.finfo(dtype).min)  # (B, D)
    outs = []
    for t in range(tokens):
        kt, vt = k[:, t], v[:, t]  # (B, D)
        # Output at t: the past (weights e^{p}) plus the current token (weight e^{u + k_t}).
        ww = u + kt
        q = torch.maximum(p, ww)
        e1, e2 = torch.exp(p - q), torch.exp(ww - q)
        outs.append((e1 * a + e2 * vt) / (e1 * b + e2))
        # State after t: decay the past by e^{-w}, add token t with weight e^{k_t}.
        ww = p - w
        q = torch.maximum(ww, kt)
        e1, e2 = torch.exp(ww - q), torch.exp(kt - q)
        a = e1 * a + e2 * vt
        b = e1 * b + e2
        p = q
    return torch.stack(outs, dim=1).to(out_dtype)  # (B, N, D)


def wkv_direct(time_decay: Tensor, time_first: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Literal transcription of the WKV formula: reference for tests only.

    Builds the (N, N) weight matrix ``e^{-(t-1-i) w + k_i}`` for ``i < t`` and
    ``e^{u + k_t}`` on the diagonal, per batch element and channel. Overflows for
    large ``k``; use float64.

    Args:
        time_decay: (D,)
        time_first: (D,)
        k: (B, N, D)
        v: (B, N, D)

    Returns:
        (B, N, D)
    """
    tokens = k.shape[1]
    w = torch.exp(time_decay)  # (D,)
    t_idx = torch.arange(tokens, device=k.device).view(tokens, 1)  # (N, 1) target t
    i_idx = torch.arange(tokens, device=k.device).view(1, tokens)  # (1, N) source i
    lag = (t_idx - 1 - i_idx).to(k.dtype)  # (N, N)
    # exponent[b, t, i, c] = -(t-1-i) w_c + k[b, i, c] for i < t
    expo = -lag[None, :, :, None] * w + k[:, None, :, :]  # (B, N, N, D)
    past = torch.where((i_idx < t_idx)[None, :, :, None], torch.exp(expo), torch.zeros_like(expo))
    diag = torch.exp(time_first + k)  # (B, N, D)
    num = (past * v[:, None, :, :]).sum(dim=2) + diag * v  # (B, N, D)
    den = past.sum(dim=2) + diag  # (B, N, D)
    return num / den


class WKV(nn.Module):
    """Parameter-free module around :func:`wkv`, so hooks can attribute its cost to a layer name.

    The parameters (``time_decay``, ``time_first``) live in the owning TimeMixing.
    """

    def forward(self, time_decay: Tensor, time_first: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return wkv(time_decay, time_first, k, v)  # (B, N, D)
