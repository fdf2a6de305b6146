"""Fused element-wise work between the GEMMs of SDiT and DiT blocks, with the same results.

The profiler (``profiling.counter.LayerCounter``) counts aten ops through a
``TorchDispatchMode``; a fused path would count differently (other ops, other
shapes), so every function here takes its fused path only when nothing counts
(:func:`counting`: no Python dispatch mode, no jit / fx trace as fvcore's counter
uses) and otherwise runs the plain formulation the profiler was written against.
Both give the same values: the fused forward runs the same floating-point
operations on the same elements, only without the intermediate tensors (DiT's
multiply-adds excepted: one rounding instead of two, as ``addcmul`` does).
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


def _kernel_fits(x: Tensor, mus: tuple[Tensor, ...]) -> bool:
    """The C kernels of the mixes take CPU float32 (B', M, D) tensors."""
    cpu32 = (x, *mus)
    return (all(t.device.type == "cpu" and t.dtype == torch.float32 for t in cpu32) and x.dim() == 3
            and cpu_kernels.available())


class _ShiftMixes(torch.autograd.Function):
    """Token-shift mixes m_j = x_{n-1} + mu_j (x_n - x_{n-1}) with a hand-written backward.

    dL/dx_n = H_n + (G - H)_{n+1} with G = sum_j g_j, H = sum_j mu_j g_j (the last token has no n + 1);
    dL/dmu_j = sum over rows of g_j * delta.

    On CPU float32 both directions run the C kernels (``sdit_shift_mixes``: bit-identical mixes;
    ``sdit_shift_mixes_backward``: one pass over x and the gradients instead of ~14 tensor passes, the
    mu sums in double); elsewhere tensor ops.
    """

    @staticmethod
    def forward(ctx, x: Tensor, *mus: Tensor) -> tuple[Tensor, ...]:
        ctx.kernel = _kernel_fits(x, mus)
        if ctx.kernel:
            x = x.contiguous()  # (B', M, D)
            ctx.save_for_backward(x, *mus)
            return tuple(shift_mixes_cpu(x, torch.stack(mus)).unbind(0))  # (B', M, D) each
        delta = _delta(x)  # (B', M, D)
        ctx.save_for_backward(delta, *mus)
        return tuple(_mixes_out(x, delta, mus))

    @staticmethod
    def backward(ctx, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        saved, *mus = ctx.saved_tensors
        if ctx.kernel and all(g is not None for g in grads) and cpu_kernels.available():
            return _mixes_backward_cpu(saved, mus, list(grads))
        delta = _delta(saved) if ctx.kernel else saved  # (B', M, D)
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


def _mixes_backward_cpu(x: Tensor, mus: list[Tensor], grads: list[Tensor]) -> tuple[Tensor, ...]:
    """dL/dx (B', M, D) and dL/dmu_j (D,) each, from the C kernel."""
    grad_x, grad_mus = shift_mixes_backward_cpu(x, torch.stack(mus), grads)  # (B', M, D), (J, D)
    return (grad_x, *grad_mus.unbind(0))


@torch.library.custom_op("sdit::shift_mixes_backward", mutates_args=())
def shift_mixes_backward_cpu(x: Tensor, mus: Tensor, grads: list[Tensor]) -> tuple[Tensor, Tensor]:
    """The C kernel of the mixes' backward: x (B', M, D), mus (J, D), J gradients (B', M, D) ->
    dL/dx (B', M, D), dL/dmus (J, D)."""
    rows, tokens, dim = x.shape
    x, mus = x.contiguous(), mus.contiguous()
    grads = [g.contiguous() for g in grads]
    grad_x = torch.empty_like(x)  # (B', M, D)
    grad_mus = x.new_empty(mus.shape)  # (J, D)
    status = cpu_kernels.load().sdit_shift_mixes_backward(
        cpu_kernels.ptr(x), cpu_kernels.ptr(mus), cpu_kernels.ptr_array(grads), cpu_kernels.ptr(grad_x),
        cpu_kernels.ptr(grad_mus), rows, tokens, dim, mus.shape[0], torch.get_num_threads(),
    )
    if status != 0:
        raise MemoryError("sdit_shift_mixes_backward: cannot allocate the mu gradients' partial sums")
    return grad_x, grad_mus


@shift_mixes_backward_cpu.register_fake
def _(x, mus, grads):
    return torch.empty_like(x), x.new_empty(mus.shape)


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


# ---- DiT's adaLN modulation, gated residuals and attention heads -------------------------------------------
class _Modulate(torch.autograd.Function):
    """adaLN's x * (1 + scale) + shift with a hand-written backward.

    Autograd's ``addcmul`` backward multiplies by its scalar ``value`` (1) and then by the other factor, so
    each (B, L, D) gradient costs two passes; here dL/dx = g (1 + scale), dL/dshift = sum_L g,
    dL/dscale = sum_L g x, one pass each.
    """

    @staticmethod
    def forward(ctx, x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
        gain = 1 + scale  # (B, D)
        ctx.save_for_backward(x, gain)
        return torch.addcmul(shift[:, None], x, gain[:, None])  # (B, L, D)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, gain = ctx.saved_tensors
        need_x, need_shift, need_scale = ctx.needs_input_grad
        grad_x = grad * gain[:, None] if need_x else None  # (B, L, D)
        grad_shift = grad.sum(1) if need_shift else None  # (B, D)
        # Under autocast the factors may be of two dtypes (vecdot takes one): in the gradient's, as addcmul promotes.
        grad_scale = torch.linalg.vecdot(grad, x.to(grad.dtype), dim=1) if need_scale else None  # sum_L g x, (B, D)
        return grad_x, grad_shift, grad_scale


class _GatedResidual(torch.autograd.Function):
    """x + gate * out with a hand-written backward: dL/dx = g (no pass), dL/dgate = sum_L g out,
    dL/dout = g gate (autograd's ``addcmul`` spends three (B, L, D) multiplies on the two)."""

    @staticmethod
    def forward(ctx, x: Tensor, gate: Tensor, out: Tensor) -> Tensor:
        ctx.save_for_backward(gate, out)
        return torch.addcmul(x, gate[:, None], out)  # (B, L, D)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        gate, out = ctx.saved_tensors
        need_x, need_gate, need_out = ctx.needs_input_grad
        grad_gate = torch.linalg.vecdot(grad, out.to(grad.dtype), dim=1) if need_gate else None  # (B, D), as above
        grad_out = grad * gate[:, None] if need_out else None  # (B, L, D)
        return grad if need_x else None, grad_gate, grad_out


def _tracked(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: x * (1 + scale) + shift, with (B, D) conditioning broadcast over (B, L, D) tokens.

    Counted: the plain form. Otherwise one ``addcmul`` (and under autograd :class:`_Modulate`'s backward).
    """
    if counting():
        return x * (1 + scale[:, None]) + shift[:, None]
    if _tracked(x, shift, scale) and not torch.compiler.is_compiling():
        return _Modulate.apply(x, shift, scale)
    return torch.addcmul(shift[:, None], x, 1 + scale[:, None])  # one pass over (B, L, D)


@torch.library.custom_op("sdit::norm_modulate", mutates_args=())
def norm_modulate_cpu(x: Tensor, shift: Tensor, scale: Tensor, eps: float) -> Tensor:
    """LayerNorm (no affine) then adaLN of float32 CPU tensors, the C kernel (no autograd): x (B, L, D)
    contiguous, shift and scale (B, D) -> (B, L, D)."""
    batch, tokens, dim = x.shape
    shift, scale = shift.contiguous(), scale.contiguous()
    out = torch.empty_like(x)  # (B, L, D)
    cpu_kernels.load().sdit_norm_modulate(
        cpu_kernels.ptr(x), cpu_kernels.ptr(shift), cpu_kernels.ptr(scale), cpu_kernels.ptr(out), batch, tokens,
        dim, eps, torch.get_num_threads(),
    )
    return out


@norm_modulate_cpu.register_fake
def _(x, shift, scale, eps):
    return torch.empty_like(x)


def _norm_kernel_fits(norm: nn.Module, x: Tensor, shift: Tensor, scale: Tensor) -> bool:
    """The LayerNorm + adaLN kernel runs when sampling on CPU float32 (nothing tracked, counted, compiled or
    hooking the norm) with a LayerNorm over D without affine parameters."""
    return (isinstance(norm, nn.LayerNorm) and norm.weight is None and norm.bias is None and x.dim() == 3
            and tuple(norm.normalized_shape) == (x.shape[-1],) and x.is_contiguous()
            and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in (x, shift, scale))
            and not _tracked(x, shift, scale) and not torch.is_autocast_enabled("cpu") and not counting()
            and not torch.compiler.is_compiling() and not _hooked(norm) and cpu_kernels.available())


def norm_modulate(norm: nn.Module, x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN on a LayerNorm, ``modulate(norm(x), shift, scale)``: (B, L, D), (B, D), (B, D) -> (B, L, D).

    Sampling on CPU float32 with an affine-free LayerNorm (DiT's), one C pass (:func:`norm_modulate_cpu`, mean and
    variance in double: within float rounding of torch's two passes); otherwise exactly the two calls.
    """
    if _norm_kernel_fits(norm, x, shift, scale):
        return norm_modulate_cpu(x, shift, scale, float(norm.eps))
    return modulate(norm(x), shift, scale)


def gated_residual(x: Tensor, gate: Tensor, out: Tensor) -> Tensor:
    """x + gate * out, with a (B, D) gate broadcast over tokens: (B, L, D).

    Counted: the plain form. Otherwise one ``addcmul`` (and under autograd :class:`_GatedResidual`'s backward).
    """
    if counting():
        return x + gate[:, None] * out
    if _tracked(x, gate, out) and not torch.compiler.is_compiling():
        return _GatedResidual.apply(x, gate, out)
    return torch.addcmul(x, gate[:, None], out)


class _SplitHeads(torch.autograd.Function):
    """q, k, v as (B, H, L, d) views of the (B, L, 3, H, d) qkv projection; the backward writes their
    gradients straight into that layout (autograd's unbind-and-permute stacks them first, then copies)."""

    @staticmethod
    def forward(ctx, qkv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        ctx.shape = qkv.shape
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, H, L, d) each
        return q, k, v

    @staticmethod
    def backward(ctx, *grads: Tensor | None) -> Tensor:
        present = [g for g in grads if g is not None]
        grad = (present[0].new_empty if len(present) == 3 else present[0].new_zeros)(ctx.shape)  # (B, L, 3, H, d)
        for j, g in enumerate(grads):
            if g is not None:
                grad[:, :, j].copy_(g.transpose(1, 2))  # (B, L, H, d)
        return grad


def split_heads(qkv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(B, L, 3, H, d) -> q, k, v, (B, H, L, d) each (views); :class:`_SplitHeads` under autograd."""
    if _tracked(qkv) and not counting() and not torch.compiler.is_compiling():
        return _SplitHeads.apply(qkv)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, H, L, d) each
    return q, k, v


# ---- DiT's MLP: fc1's bias and GELU(tanh) in one C pass -----------------------------------------------------
@torch.library.custom_op("sdit::bias_gelu", mutates_args=())
def bias_gelu_cpu(y: Tensor, bias: Tensor | None) -> Tensor:
    """GELU(tanh)(y + bias) of float32 CPU tensors, the C kernel (no autograd): y (..., C), bias (C,) or None."""
    y = y.contiguous()
    out = torch.empty_like(y)  # (..., C)
    _bias_gelu_call(y, bias, out)
    return out


@bias_gelu_cpu.register_fake
def _(y, bias):
    return torch.empty_like(y)


@torch.library.custom_op("sdit::bias_gelu_", mutates_args=("y",))
def bias_gelu_cpu_(y: Tensor, bias: Tensor | None) -> None:
    """GELU(tanh)(y + bias) in place on a contiguous float32 CPU tensor y (..., C), the C kernel (no autograd)."""
    _bias_gelu_call(y, bias, y)


def _bias_gelu_call(y: Tensor, bias: Tensor | None, out: Tensor) -> None:
    cols = y.shape[-1]
    bias = None if bias is None else bias.contiguous()
    cpu_kernels.load().sdit_bias_gelu(
        cpu_kernels.ptr(y), cpu_kernels.ptr(bias), cpu_kernels.ptr(out), y.numel() // max(cols, 1), cols,
        torch.get_num_threads(),
    )


@torch.library.custom_op("sdit::bias_gelu_backward", mutates_args=())
def bias_gelu_backward_cpu(y: Tensor, bias: Tensor | None, grad: Tensor) -> tuple[Tensor, Tensor]:
    """The C kernel of the backward: dL/dy (..., C) = grad * GELU'(y + bias), and dL/dbias (C,) = its sum over
    rows (an empty tensor when bias is None)."""
    y, grad = y.contiguous(), grad.contiguous()
    cols = y.shape[-1]
    bias = None if bias is None else bias.contiguous()
    grad_y = torch.empty_like(y)  # (..., C)
    grad_bias = y.new_empty(0 if bias is None else cols)  # (C,)
    status = cpu_kernels.load().sdit_bias_gelu_backward(
        cpu_kernels.ptr(y), cpu_kernels.ptr(bias), cpu_kernels.ptr(grad), cpu_kernels.ptr(grad_y),
        None if bias is None else cpu_kernels.ptr(grad_bias), y.numel() // max(cols, 1), cols,
        torch.get_num_threads(),
    )
    if status != 0:
        raise MemoryError("sdit_bias_gelu_backward: cannot allocate the bias gradient's partial sums")
    return grad_y, grad_bias


@bias_gelu_backward_cpu.register_fake
def _(y, bias, grad):
    return torch.empty_like(y), y.new_empty(0 if bias is None else y.shape[-1])


class _BiasGelu(torch.autograd.Function):
    """GELU(tanh)(y + bias) by the C kernels, saving y (the bias-free fc1 output): one pass forward (no bias copy,
    no separate activation pass), one pass backward that also sums the bias gradient."""

    @staticmethod
    def forward(ctx, y: Tensor, bias: Tensor | None) -> Tensor:
        y = y.contiguous()  # (..., C)
        ctx.save_for_backward(y, bias)
        return bias_gelu_cpu(y, bias)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        y, bias = ctx.saved_tensors
        grad_y, grad_bias = bias_gelu_backward_cpu(y, bias, grad)
        need_y, need_bias = ctx.needs_input_grad
        return grad_y if need_y else None, grad_bias if need_bias and bias is not None else None


def _hooked(*modules: nn.Module, backward: bool = False) -> bool:
    """True when a forward hook (with ``backward``, also a backward hook) would see the modules' calls
    (theirs, or a global one)."""
    from torch.nn.modules import module as module_state

    if module_state._global_forward_hooks or module_state._global_forward_pre_hooks:
        return True
    if backward and (module_state._global_backward_hooks or module_state._global_backward_pre_hooks):
        return True
    return any(m._forward_hooks or m._forward_pre_hooks or (backward and (m._backward_hooks or m._backward_pre_hooks))
               for m in modules)


def _gelu_kernel_fits(x: Tensor, fc1: nn.Linear, act: nn.Module) -> bool:
    """The bias + GELU kernel runs for CPU float32 MLPs with a tanh GELU, nothing counting or hooking them."""
    return (isinstance(fc1, nn.Linear) and isinstance(act, nn.GELU) and act.approximate == "tanh"
            and x.device.type == "cpu" and x.dtype == torch.float32 and fc1.weight.dtype == torch.float32
            and (fc1.bias is None or fc1.bias.dtype == torch.float32) and not torch.is_autocast_enabled("cpu")
            and not counting() and not torch.compiler.is_compiling() and not _hooked(fc1, act)
            and cpu_kernels.available())


def gelu_mlp(mlp: nn.Sequential, x: Tensor) -> Tensor:
    """DiT's MLP, ``Linear -> GELU(tanh) -> Linear``: (B, L, D) -> (B, L, D).

    Counted, compiled, hooked or off CPU float32: ``mlp(x)``, the plain form. Otherwise fc1 runs without its bias
    (``mm``, no bias copy into the output) and one C pass adds the bias and applies GELU(tanh) (in place without
    autograd; :class:`_BiasGelu` under autograd): the same function, within float rounding of torch's
    ``gelu(approximate='tanh')`` (a few ulps; a / (1 + exp(-2u)) for 0.5 a (1 + tanh(u))).
    """
    fc1, act, fc2 = mlp
    if not _gelu_kernel_fits(x, fc1, act):
        return mlp(x)
    y = nn.functional.linear(x, fc1.weight)  # (B, L, 4D), fc1 without its bias
    if _tracked(y) or (fc1.bias is not None and _tracked(fc1.bias)):
        return fc2(_BiasGelu.apply(y, fc1.bias))  # (B, L, D)
    bias_gelu_cpu_(y, fc1.bias)  # (B, L, 4D), GELU(y + b) in place
    return fc2(y)  # (B, L, D)
