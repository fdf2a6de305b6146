"""The RWKV-4 WKV operator over (batch, tokens, channels).

The paper's Eq. (1) has a typo (the denominator repeats ``v_i``); we use RWKV-4's
formula, per channel c and token t (docs/design.md §1):

    wkv_t = (sum_{i<t} e^{-(t-1-i) w + k_i} v_i + e^{u + k_t} v_t)
          / (sum_{i<t} e^{-(t-1-i) w + k_i}     + e^{u + k_t})

with ``w = exp(time_decay) > 0`` and ``u = time_first``.

Implementations of one formula:

- :func:`wkv` is the one the model runs: on CUDA :func:`wkv_chunked`; on the CPU the
  compiled C++ kernel of :mod:`sdit.models.wkv_ext` (``wkv_cpu.cpp``, one vectorised
  loop per batch row and channel block, built at setup), elsewhere or when that cannot
  build, :func:`wkv_python`.
- :func:`wkv_chunked` is the chunked parallel form: whole-tensor operations over
  chunks of tokens and over chunks, no loop over tokens, so a GPU runs a few large
  kernels (and ``torch.compile`` can fuse them) instead of ~15 launches per token.
- :func:`wkv_python` runs a custom autograd function
  (:class:`WKVFunction`) whose backward pass is written by hand, a reverse
  recurrence in the same stable form, instead of letting autograd record ~20
  small nodes per token. Both passes run token by token on (B, D) slices, which
  stay in cache (whole-tensor passes over (B, N, D) measured slower on CPU), with
  the four exponentials of a token in one ``exp`` call. Without autograd it keeps
  no per-token states.
- :func:`wkv_reference` is the plain sequential loop under autograd; slow, the
  reference the fast path is tested against.
- :func:`wkv_direct` transcribes the formula literally (O(N^2) memory, unstable
  for large ``k``); the float64 ground truth of the tests.

Stability. The recurrence carries the numerator and denominator scaled by their
running maximum exponent ``p`` (A = a e^p, B = b e^p), so no ``exp`` sees a
positive argument and large ``k`` cannot overflow. Every exponent argument is also
clamped from below at ``-60``: a weight under e^-60 ~ 1e-26 next to a weight of 1
is invisible in float32 and float64 sums alike, and the clamp keeps results out
of the subnormal range, where CPU ``exp`` and multiplies run ~100x slower (an
unclamped SDiT step can spend most of its time there).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from sdit.models import wkv_ext

_EXP_FLOOR = -60.0  # exponent arguments below this are clamped (see module docstring)


def _exp_(x: Tensor) -> Tensor:
    """e^x in place for x <= 0, clamped at e^-60 so that nothing becomes subnormal."""
    return x.clamp_(min=_EXP_FLOOR).exp_()


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _wkv_forward(
    w: Tensor, u: Tensor, k: Tensor, v: Tensor, store: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The stable recurrence, one token at a time on (B, D) slices.

    Per token t the state before it is A_{t-1} = a e^p, B_{t-1} = b e^p (a, b stacked
    as ``ab``; ``p`` the running maximum exponent). Output, with q = max(p, u + k_t):
    wkv_t = (e^{p-q} a + e^{u+k_t-q} v_t) / (e^{p-q} b + e^{u+k_t-q}). Update, with
    p' = max(p - w, k_t): a' = e^{p-w-p'} a + e^{k_t-p'} v_t, b' = e^{p-w-p'} b + e^{k_t-p'}.
    Before token 0 the sums are empty: a = b = 0, p = k_0 - 60 (any p <= k_0 works).

    Small per-token operations stay in cache; whole-tensor passes would not.

    Args:
        w: (D,) decay rate, > 0.
        u: (D,) bonus of the current token.
        k: (B, N, D) keys.
        v: (B, N, D) values.
        store: Keep the states before every token (for the backward pass).

    Returns:
        wkv (B, N, D); with ``store``, also ab (2, B, N, D) and p (B, N, D), the
        states before each token; otherwise None, None.
    """
    batch, tokens, dim = k.shape
    y = k.new_empty(batch, tokens, dim)  # (B, N, D)
    if store:
        ab_seq = k.new_empty(2, batch, tokens + 1, dim)  # (2, B, N+1, D)
        p_seq = k.new_empty(batch, tokens + 1, dim)  # (B, N+1, D)
        ab, p = ab_seq[:, :, 0], p_seq[:, 0]  # (2, B, D), (B, D)
    else:
        ab_seq = p_seq = None
        ab, p = k.new_empty(2, batch, dim), k.new_empty(batch, dim)  # (2, B, D), (B, D)
    ab.zero_()
    torch.add(k[:, 0], _EXP_FLOOR, out=p)
    uk = k.new_empty(batch, dim)  # (B, D): u + k_t
    v1 = k.new_ones(2, batch, dim)  # (2, B, D): [v_t; 1], so a and b update in one op
    expo = k.new_empty(4, batch, dim)  # (4, B, D): exponents of the four weights
    nd = k.new_empty(2, batch, dim)  # (2, B, D): numerator and denominator of wkv_t
    for t in range(tokens):
        kt = k[:, t]  # (B, D)
        torch.add(kt, u, out=uk)
        q = torch.maximum(p, uk)  # (B, D)
        p_decayed = p - w  # (B, D)
        p_next = p_seq[:, t + 1] if store else p  # (B, D), written after its last read below
        torch.sub(p, q, out=expo[0])
        torch.sub(uk, q, out=expo[1])
        torch.maximum(p_decayed, kt, out=p_next)
        torch.sub(p_decayed, p_next, out=expo[2])
        torch.sub(kt, p_next, out=expo[3])
        e_past, e_now, decay, e_k = _exp_(expo)  # (B, D) each
        v1[0].copy_(v[:, t])
        torch.mul(ab, e_past, out=nd).addcmul_(e_now, v1)
        torch.div(nd[0], nd[1], out=y[:, t])
        ab_next = ab_seq[:, :, t + 1] if store else ab  # (2, B, D)
        torch.mul(ab, decay, out=ab_next).addcmul_(e_k, v1)
        ab, p = ab_next, p_next
    if store:
        return y, ab_seq, p_seq
    return y, None, None


def _wkv_backward(
    w: Tensor, u: Tensor, k: Tensor, v: Tensor, y: Tensor, ab_seq: Tensor, p_seq: Tensor, grad_y: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Hand-written backward of :func:`_wkv_forward`, one token at a time in reverse.

    With g_t = dL/dwkv_t, D_t the denominator of wkv_t and c_t = g_t / D_t, the
    gradients of the unscaled states, gA_{t-1} = e^{-w} gA_t + c_t and
    gB_{t-1} = e^{-w} gB_t - c_t wkv_t, are carried as gA = ga e^{-r},
    gB = gb e^{-r}, with ``r`` a running minimum of exponents (the mirror image of
    the forward scaling; r_t >= p_t keeps every exponent below <= 0). Then
    dL/dv_t = c_t e^{u+k_t} + gA_t e^{k_t},
    dL/dk_t = c_t e^{u+k_t} (v_t - wkv_t) + e^{k_t} (gA_t v_t + gB_t),
    dL/du = sum_t c_t e^{u+k_t} (v_t - wkv_t),
    dL/dw = -sum_t e^{-w} (gA_t A_{t-1} + gB_t B_{t-1}).

    Returns:
        Gradients of w (D,), u (D,), k (B, N, D), v (B, N, D).
    """
    batch, tokens, dim = k.shape
    grad_k = torch.empty_like(k)  # (B, N, D)
    grad_v = torch.empty_like(v)  # (B, N, D)
    grad_u = k.new_zeros(batch, dim)  # (B, D), summed over B at the end
    grad_w = k.new_zeros(batch, dim)  # (B, D)
    gab = k.new_zeros(2, batch, dim)  # (2, B, D): ga, gb after token t (none after the last)
    r = p_seq[:, tokens].clone()  # (B, D): any r >= p_{N-1} scales the zero gradient safely
    uk = k.new_empty(batch, dim)  # (B, D)
    expo = k.new_empty(4, batch, dim)  # (4, B, D)
    step = k.new_empty(2, batch, dim)  # (2, B, D): rescaling of the carried and the new term
    cc = k.new_empty(2, batch, dim)  # (2, B, D): [c_t; -c_t wkv_t], the new terms of gA, gB
    for t in range(tokens - 1, -1, -1):
        kt, vt, yt = k[:, t], v[:, t], y[:, t]  # (B, D)
        ab, p = ab_seq[:, :, t], p_seq[:, t]  # (2, B, D), (B, D): state before t
        torch.add(kt, u, out=uk)
        q = torch.maximum(p, uk)  # (B, D)
        p_decayed = p - w  # (B, D)
        torch.sub(p, q, out=expo[0])
        torch.sub(uk, q, out=expo[1])
        torch.sub(kt, r, out=expo[2])
        torch.sub(p_decayed, r, out=expo[3])
        e_past, e_now, e_k, e_w = _exp_(expo)  # (B, D) each
        c = torch.div(grad_y[:, t], torch.addcmul(e_now, e_past, ab[1]), out=cc[0])  # g_t / D_t e^{q_t}
        direct = c * e_now  # (B, D)
        torch.addcmul(direct, gab[0], e_k, out=grad_v[:, t])
        direct.mul_(vt - yt)  # (B, D): the dL/du term of token t
        grad_u.add_(direct)
        torch.addcmul(direct, e_k, torch.addcmul(gab[1], gab[0], vt), out=grad_k[:, t])
        state_term = gab * ab  # (2, B, D)
        grad_w.addcmul_(e_w, state_term[0]).addcmul_(e_w, state_term[1])
        if t == 0:
            break
        # gA_{t-1} = e^{-w} gA_t + c_t, rescaled to r' = min(r + w, q_t).
        r_decayed = r + w  # (B, D)
        torch.minimum(r_decayed, q, out=r)
        torch.sub(r, r_decayed, out=step[0])
        torch.sub(r, q, out=step[1])
        carry, new = _exp_(step)  # (B, D) each
        torch.mul(c, yt, out=cc[1]).neg_()
        gab.mul_(carry).addcmul_(new, cc)
    grad_w = -grad_w.sum(dim=0)  # (D,)
    return grad_w, grad_u.sum(dim=0), grad_k, grad_v


class WKVFunction(torch.autograd.Function):
    """WKV on inputs in the compute dtype, with the hand-written backward of :func:`_wkv_backward`."""

    @staticmethod
    def forward(ctx, time_decay: Tensor, time_first: Tensor, k: Tensor, v: Tensor) -> Tensor:
        w = torch.exp(time_decay)  # (D,)
        y, ab_seq, p_seq = _wkv_forward(w, time_first, k, v, store=True)
        ctx.save_for_backward(w, time_first, k, v, y, ab_seq, p_seq)
        return y

    @staticmethod
    def backward(ctx, grad_y: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        w, time_first, k, v, y, ab_seq, p_seq = ctx.saved_tensors
        grad_w, grad_u, grad_k, grad_v = _wkv_backward(w, time_first, k, v, y, ab_seq, p_seq, grad_y)
        return grad_w * w, grad_u, grad_k, grad_v  # dL/dtime_decay = w dL/dw


def wkv(time_decay: Tensor, time_first: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Numerically stable, differentiable WKV (the fast path).

    On CUDA it runs the chunked parallel form :func:`wkv_chunked`; on the CPU the
    compiled kernel of :mod:`sdit.models.wkv_ext` when that built (see
    :func:`wkv_backend`); otherwise :func:`wkv_python`. ``SDIT_WKV_CHUNKED=1`` selects the
    chunked form on every device (tests, benches), ``SDIT_WKV_CHUNKED=0`` on none.

    Args:
        time_decay: (D,) log of the decay rate; ``w = exp(time_decay)``.
        time_first: (D,) bonus ``u`` of the current token.
        k: (B, N, D) keys.
        v: (B, N, D) values.

    Returns:
        (B, N, D) in the dtype of ``v``; computed in at least float32.
    """
    if _chunked_on(k.device.type):
        return wkv_chunked(time_decay, time_first, k, v)
    if k.device.type == "cpu" and wkv_ext.available():
        return wkv_ext.wkv_cpu(time_decay, time_first, k, v)
    return wkv_python(time_decay, time_first, k, v)


CHUNK = 16  # tokens per chunk of wkv_chunked: its (B, N/L, L, L, D) weights grow with L, its chunk scan with N/L
CHUNKED_ENV = "SDIT_WKV_CHUNKED"  # "1": the chunked form on every device; "0": on none (CUDA runs the loop)


def wkv_chunked(time_decay: Tensor, time_first: Tensor, k: Tensor, v: Tensor, chunk: int = CHUNK) -> Tensor:
    """WKV in a chunked parallel form: whole-tensor operations, no loop over tokens (the GPU path).

    Tokens are cut into C = ceil(N / L) chunks of L = ``chunk`` (the last padded at its end,
    which no earlier token sees). With S_t = sum_{i<t} e^{-(t-1-i)w + k_i} (v_i; 1), the
    numerator and denominator of wkv_t before its own term, token s of chunk c (t = cL + s) has

        S_t = e^{-s w} S_{cL} + sum_{j<s} e^{-(s-1-j)w + k_{cL+j}} (v_{cL+j}; 1)       (within the chunk)
        S_{cL} = sum_{c'<c} e^{-(c-1-c') L w} T_{c'},  T_c = sum_j e^{-(L-1-j)w + k_{cL+j}} (v_{cL+j}; 1)

    so every chunk's entry state S_{cL} is itself a causal decayed sum over chunks (a (C, C)
    weight matrix) and every token's output a sum over the L tokens of its chunk plus one
    state term (an (L, L+1) weight matrix): two levels of the same formula, no sequential
    scan. Stability as in the recurrence: every sum is taken in log space, weights
    e^{x - max x} with the maximum over the terms of that sum (Eq. 1 of the paper,
    corrected as in docs/design.md §1), so no ``exp`` sees a positive argument and large
    ``k`` cannot overflow; exponent arguments are clamped at -60 as in the loop (module
    docstring), and masked (future) terms are multiplied by zero after the ``exp``.
    Autograd differentiates it; ``torch.compile`` can fuse it (no data-dependent shapes,
    no Python loop over data).

    Memory: the intra-chunk weights are B N L D elements, L times the input: the price of
    the parallel form (a few of them live for the backward pass).

    Same arguments and result as :func:`wkv`, plus ``chunk`` (L > 0).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    out_dtype = v.dtype
    dtype = _compute_dtype(v.dtype)
    w = torch.exp(time_decay.to(dtype))  # (D,)
    u = time_first.to(dtype)  # (D,)
    k, v = k.to(dtype), v.to(dtype)
    batch, tokens, dim = k.shape
    size = min(chunk, tokens)  # L
    chunks = -(-tokens // size)  # C
    pad = chunks * size - tokens
    if pad:
        k = torch.nn.functional.pad(k, (0, 0, 0, pad))  # (B, C*L, D); padded tokens come after every real one
        v = torch.nn.functional.pad(v, (0, 0, 0, pad))
    k = k.view(batch, chunks, size, dim)  # (B, C, L, D)
    v = v.view(batch, chunks, size, dim)  # (B, C, L, D)
    idx = torch.arange(size, device=k.device)  # (L,)
    cdx = torch.arange(chunks, device=k.device)  # (C,)

    # Chunk level. T_c in log space: exponents -(L-1-j)w + k_j, scaled by their maximum q_c.
    end_lag = (size - 1 - idx).to(dtype)[:, None]  # (L, 1)
    f = k - end_lag * w  # (B, C, L, D)
    q = f.amax(dim=2)  # (B, C, D)
    ef = _exp_floor(f - q[:, :, None])  # (B, C, L, D)
    t_num = (ef * v).sum(dim=2)  # (B, C, D)
    t_den = ef.sum(dim=2)  # (B, C, D)
    # S_{cL} = sum_{c'<c} e^{g[c, c']} (t_num, t_den)_{c'}, g = -(c-1-c') L w + q_{c'}, scaled by p_c = max g.
    earlier = cdx[None, :] < cdx[:, None]  # (C, C): c' < c
    chunk_lag = ((cdx[:, None] - 1 - cdx[None, :]).clamp(min=0) * size).to(dtype)  # (C, C)
    g = q[:, None, :, :] - chunk_lag[:, :, None] * w  # (B, C, C, D)
    g = torch.where(earlier[:, :, None], g, -torch.inf)
    has_past = (cdx > 0)[None, :, None]  # (1, C, 1): chunk 0 starts from empty sums
    p = torch.where(has_past, g.amax(dim=2), 0.0)  # (B, C, D)
    eg = torch.where(earlier[:, :, None], _exp_floor(g - p[:, :, None]), 0.0)  # (B, C, C, D)
    s_num = (eg * t_num[:, None]).sum(dim=2)  # (B, C, D): S_{cL} = s_num e^{p}
    s_den = (eg * t_den[:, None]).sum(dim=2)  # (B, C, D)

    # Token level: token s of chunk c sums the chunk's past tokens j < s (exponents
    # k_j - (s-1-j) w), its own term (u + k_s) and the state entering the chunk (p_c - s w;
    # none in chunk 0), scaled by m, the largest of those exponents.
    before = idx[None, :] < idx[:, None]  # (L, L): j < s
    lag = (idx[:, None] - 1 - idx[None, :]).to(dtype)  # (L, L): s-1-j
    bias = torch.where(before[:, :, None], -lag[:, :, None] * w, -torch.inf)  # (L, L, D)
    e_past = k[:, :, None] + bias  # (B, C, L_s, L_j, D): -inf where j >= s
    e_own = u + k  # (B, C, L, D)
    e_state = torch.where(has_past[..., None], p[:, :, None] - idx.to(dtype)[:, None] * w, -torch.inf)  # (B, C, L, D)
    m = torch.maximum(torch.maximum(e_past.amax(dim=3), e_own), e_state)  # (B, C, L, D): finite (own term)
    # Masked terms: -inf, clamped to -60 like the rest, then zeroed by the mask (not by a where on
    # the exp, whose unused branch would pass 0 * inf = NaN into the gradient).
    w_past = _exp_floor(e_past - m[:, :, :, None]) * before[:, :, None].to(dtype)  # (B, C, L, L, D)
    w_own = _exp_floor(e_own - m)  # (B, C, L, D)
    w_state = _exp_floor(e_state - m) * has_past[..., None].to(dtype)  # (B, C, L, D)
    num = (w_past * v[:, :, None]).sum(dim=3) + w_own * v + w_state * s_num[:, :, None]  # (B, C, L, D)
    den = w_past.sum(dim=3) + w_own + w_state * s_den[:, :, None]  # (B, C, L, D)
    y = (num / den).view(batch, chunks * size, dim)[:, :tokens]  # (B, N, D)
    return y.to(out_dtype)


def _exp_floor(x: Tensor) -> Tensor:
    """e^x for x <= 0 (or -inf), clamped at e^-60 like :func:`_exp_`, out of place (autograd-safe)."""
    return torch.exp(x.clamp(min=_EXP_FLOOR))


@torch.compiler.assume_constant_result
def _chunked_on(device_type: str) -> bool:
    """Whether :func:`wkv` runs :func:`wkv_chunked` on this device type (``SDIT_WKV_CHUNKED``, else CUDA only)."""
    flag = os.environ.get(CHUNKED_ENV, "").strip()
    if flag in ("0", "1"):
        return flag == "1"
    return device_type == "cuda"


@torch.compiler.disable  # a loop of ~15 small ops per token: opaque to torch.compile, not unrolled
def wkv_python(time_decay: Tensor, time_first: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """WKV by the token loop of :func:`_wkv_forward` in tensor operations, on any device.

    Under autograd it runs :class:`WKVFunction`; without gradients (sampling) the
    forward recurrence alone, keeping no per-token states. Same arguments and
    result as :func:`wkv`.
    """
    out_dtype = v.dtype
    dtype = _compute_dtype(v.dtype)
    args = (time_decay.to(dtype), time_first.to(dtype), k.to(dtype), v.to(dtype))
    if torch.is_grad_enabled() and any(a.requires_grad for a in args):
        y = WKVFunction.apply(*args)
    else:
        y, _, _ = _wkv_forward(torch.exp(args[0]), *args[1:], store=False)
    return y.to(out_dtype)  # (B, N, D)


def wkv_backend(device: torch.device | str) -> str:
    """Which WKV implementation :func:`wkv` runs on ``device``, in one line (builds the kernel if needed)."""
    kind = torch.device(device).type
    if _chunked_on(kind):
        return f"chunked parallel form (chunks of {CHUNK} tokens, tensor ops; {CHUNKED_ENV}=0 for the token loop)"
    if kind != "cpu":
        return f"python token loop (no compiled kernel for {kind})"
    if wkv_ext.available():
        return f"C++ kernel: {wkv_ext.extension_status()}"
    return f"python token loop (C++ kernel {wkv_ext.extension_status()})"


def wkv_reference(time_decay: Tensor, time_first: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """The plain sequential recurrence under autograd: slow reference for :func:`wkv`.

    Same arguments, result and stability as :func:`wkv`, without the exponent clamp.
    """
    out_dtype = v.dtype
    dtype = _compute_dtype(v.dtype)
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
