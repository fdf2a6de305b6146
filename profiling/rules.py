"""Counting rules: aten op -> counts, as small pure functions.

Each rule takes ``(args, kwargs, out, spike)`` where ``spike(t)`` says whether a
tensor carries spikes (decided by provenance, see :mod:`profiling.counter`), and
returns a dict of column -> count. Counts that depend on data (ACs) are 0-dim
int64 tensors on the op's device, so no rule forces a device synchronisation.

Columns (per op; the counter sums them per layer):
    macs        multiply-accumulates of synaptic ops (matmul, conv) with real inputs
    acs         accumulates of synaptic ops with a spike input: nnz(spikes) x fan-out,
                and for spike x spike products the number of coincidences
    dense_macs  the MACs the synaptic op would cost dense, whatever its inputs
    norm        elements normalised (LayerNorm, GroupNorm, BatchNorm)
    softmax     elements softmaxed (one exp, one add, one divide each)
    exp         transcendental elementwise ops: exp, sigmoid, tanh, SiLU, GELU, ...
    adds        elementwise additions and subtractions, reductions (sum, mean), bias adds
    muls        elementwise multiplications and divisions, squares
    other       comparisons, max/min, ReLU, clamps, selects
    bytes       operand bytes of synaptic ops: inputs, weights and outputs, each read or
                written once (no cache reuse across ops), at their storage dtype
Ops in :data:`FREE_OPS` move or create data and cost nothing here; every other op
without a rule is reported as unsupported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from profiling.records import OP_COLUMNS  # noqa: F401  (re-exported: the columns the rules fill)

aten = torch.ops.aten

Count = int | Tensor
Counts = dict[str, Count]
SpikeTest = Callable[[Any], bool]
Rule = Callable[[Sequence[Any], dict[str, Any], Any, SpikeTest], Counts]



def _bytes(*tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, Tensor))


def _nnz(x: Tensor) -> Tensor:
    """Non-zeros as a 0-dim int64 tensor on x's device (no host sync)."""
    return torch.count_nonzero(x)


def _matmul_counts(a: Tensor, b: Tensor, spike: SpikeTest, batched: bool) -> Counts:
    """(…, n, k) @ (…, k, m): dense n*k*m per batch; ACs if either side is spikes."""
    n, k = a.shape[-2], a.shape[-1]
    m = b.shape[-1]
    batch = a.shape[0] if batched else 1
    dense = batch * n * k * m
    a_spk, b_spk = spike(a), spike(b)
    if a_spk and b_spk:
        # coincidences: sum over k of nnz(a[..., :, k]) * nnz(b[..., k, :])
        col = torch.count_nonzero(a, dim=-2)  # (…, k)
        row = torch.count_nonzero(b, dim=-1)  # (…, k)
        return {"acs": (col * row).sum(), "dense_macs": dense}
    if a_spk:
        return {"acs": _nnz(a) * m, "dense_macs": dense}
    if b_spk:
        return {"acs": _nnz(b) * n, "dense_macs": dense}
    return {"macs": dense, "dense_macs": dense}


def mm_rule(args, kwargs, out, spike) -> Counts:
    return {**_matmul_counts(args[0], args[1], spike, batched=False), "bytes": _bytes(args[0], args[1], out)}


def addmm_rule(args, kwargs, out, spike) -> Counts:
    counts = _matmul_counts(args[1], args[2], spike, batched=False)
    counts["adds"] = out.numel()  # bias (or input) added to every output element
    counts["bytes"] = _bytes(args[0], args[1], args[2], out)
    return counts


def bmm_rule(args, kwargs, out, spike) -> Counts:
    return {**_matmul_counts(args[0], args[1], spike, batched=True), "bytes": _bytes(args[0], args[1], out)}


def baddbmm_rule(args, kwargs, out, spike) -> Counts:
    counts = _matmul_counts(args[1], args[2], spike, batched=True)
    counts["adds"] = out.numel()
    counts["bytes"] = _bytes(args[0], args[1], args[2], out)
    return counts


def convolution_rule(args, kwargs, out, spike) -> Counts:
    """aten.convolution(x, w, b, stride, padding, dilation, transposed, output_padding, groups)."""
    x, w, bias = args[0], args[1], args[2]
    transposed, groups = args[6], args[8]
    if transposed:
        # each input element scatters into C_out/groups * prod(kernel) outputs
        fan_out = w.shape[1] * math.prod(w.shape[2:])
        dense = x.numel() * fan_out
        acs = _nnz(x) * fan_out if spike(x) else None
    else:
        # each output element gathers C_in/groups * prod(kernel) inputs
        dense = out.numel() * w.shape[1] * math.prod(w.shape[2:])
        acs = None
        if spike(x):
            # exact even at borders and strides: the spikes each output position reads, from the spike
            # indicator summed over each group's input channels convolved with a one-channel kernel of
            # ones, times the output channels of the group
            conv = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d,
                    3: torch.nn.functional.conv3d}[x.dim() - 2]
            per_group = (x != 0).to(torch.float64).unflatten(1, (groups, -1)).sum(dim=2)  # (B, groups, ...)
            ones = torch.ones((groups, 1, *w.shape[2:]), dtype=torch.float64, device=x.device)
            hits = conv(per_group, ones, stride=args[3], padding=args[4], dilation=args[5], groups=groups)
            acs = (hits.sum() * (w.shape[0] // groups)).round().to(torch.int64)
    counts: Counts = {"dense_macs": dense, "bytes": _bytes(x, w, bias, out)}
    if acs is None:
        counts["macs"] = dense
    else:
        counts["acs"] = acs
    if bias is not None:
        counts["adds"] = out.numel()
    return counts


def sdpa_rule(args, kwargs, out, spike) -> Counts:
    """Fused scaled-dot-product attention: q k^T and attn v, plus the softmax."""
    q, k, v = args[0], args[1], args[2]
    batch_heads = math.prod(q.shape[:-2])
    length, source, e, ev = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
    dense = batch_heads * length * source * (e + ev)
    return {"macs": dense, "dense_macs": dense, "softmax": batch_heads * length * source,
            "muls": batch_heads * length * source,  # the 1/sqrt(d) scale
            "bytes": _bytes(q, k, v, out[0] if isinstance(out, tuple) else out)}


def norm_rule(args, kwargs, out, spike) -> Counts:
    return {"norm": args[0].numel()}


def softmax_rule(args, kwargs, out, spike) -> Counts:
    return {"softmax": args[0].numel()}


def _out_numel(out: Any) -> int:
    if isinstance(out, Tensor):
        return out.numel()
    return sum(t.numel() for t in out if isinstance(t, Tensor))


def _elementwise(column: str) -> Rule:
    def rule(args, kwargs, out, spike) -> Counts:
        return {column: _out_numel(out)}

    rule.__name__ = f"{column}_elementwise_rule"
    return rule


def reduction_rule(args, kwargs, out, spike) -> Counts:
    """sum / mean: one add per input element (mean's divide is per output, folded in)."""
    return {"adds": args[0].numel()}


RULES: dict[Any, Rule] = {
    aten.mm.default: mm_rule,
    aten._int_mm.default: mm_rule,  # int8 x int8 -> int32 (sdit.models.quant): MACs, priced by layer precision
    aten.addmm.default: addmm_rule,
    aten.bmm.default: bmm_rule,
    aten.baddbmm.default: baddbmm_rule,
    aten.convolution.default: convolution_rule,
    aten.native_layer_norm.default: norm_rule,
    aten.native_group_norm.default: norm_rule,
    aten.native_batch_norm.default: norm_rule,
    aten._native_batch_norm_legit_no_training.default: norm_rule,
    aten._softmax.default: softmax_rule,
    aten._log_softmax.default: softmax_rule,
    aten.sum.default: reduction_rule,
    aten.sum.dim_IntList: reduction_rule,
    aten.mean.default: reduction_rule,
    aten.mean.dim: reduction_rule,
}
for _name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
              "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention"):
    if hasattr(aten, _name):
        RULES[getattr(aten, _name).default] = sdpa_rule

_ELEMENTWISE = {
    "exp": ("exp", "sigmoid", "tanh", "silu", "gelu", "log", "sin", "cos", "sqrt", "rsqrt", "erf",
            "elu", "softplus", "exp2", "log1p", "expm1"),
    "adds": ("add", "sub", "rsub", "neg", "cumsum"),
    "muls": ("mul", "div", "reciprocal", "pow", "square"),
    "other": ("relu", "maximum", "minimum", "clamp", "clamp_min", "clamp_max", "where", "gt", "lt",
              "ge", "le", "eq", "ne", "heaviside", "abs", "sign", "threshold", "hardtanh",
              "masked_fill", "logical_and", "logical_or", "logical_not", "logical_xor", "bitwise_and",
              "bitwise_or", "bitwise_xor", "bitwise_not", "floor", "round", "ceil"),
}


def _register(names: tuple[str, ...], rule: Rule) -> None:
    """Give every overload of ``names`` and their in-place ``name_`` forms ``rule`` (unless set)."""
    for name in names:
        for base in (name, name + "_"):
            packet = getattr(aten, base, None)
            if packet is None:
                continue
            for overload in packet.overloads():
                RULES.setdefault(getattr(packet, overload), rule)


for _column, _names in _ELEMENTWISE.items():
    _register(_names, _elementwise(_column))


def fused_multiply_add_rule(args, kwargs, out, spike) -> Counts:
    """addcmul / addcdiv / lerp: one multiply (or divide) and one add per output element."""
    n = _out_numel(out)
    return {"muls": n, "adds": n}


_register(("addcmul", "addcdiv", "lerp"), fused_multiply_add_rule)


def _window_reads(in_sizes: Sequence[int], out_sizes: Sequence[int]) -> int:
    """Input elements read by an adaptive pool from ``in_sizes`` to ``out_sizes`` (spatial dims), summed over
    output cells: window i of a dimension spans floor(i*In/Out) .. ceil((i+1)*In/Out)."""
    total = 1
    for n_in, n_out in zip(in_sizes, out_sizes, strict=True):
        total *= sum(-(-(i + 1) * n_in // n_out) - (i * n_in // n_out) for i in range(n_out))
    return total


def _pool_rule(column: str, adaptive: bool, spatial: int) -> Rule:
    def rule(args, kwargs, out, spike) -> Counts:
        values = out[0] if isinstance(out, tuple | list) else out  # max-pools also return indices
        x = args[0]
        if adaptive:
            lead = math.prod(values.shape[:-spatial])
            reads = lead * _window_reads(x.shape[-spatial:], values.shape[-spatial:])
        else:
            kernel = list(args[1]) if isinstance(args[1], list | tuple) else [args[1]]
            reads = values.numel() * math.prod(kernel * spatial if len(kernel) == 1 else kernel)
        # a max of k values is k - 1 comparisons; an average sums its k values (its divide folded in, as mean)
        return {column: reads - values.numel() if column == "other" else reads}

    rule.__name__ = f"{'adaptive_' if adaptive else ''}pool{spatial}d_{column}_rule"
    return rule


for _spatial in (1, 2, 3):
    _register((f"max_pool{_spatial}d", f"max_pool{_spatial}d_with_indices"), _pool_rule("other", False, _spatial))
    _register((f"avg_pool{_spatial}d",), _pool_rule("adds", False, _spatial))
    _register((f"adaptive_max_pool{_spatial}d",), _pool_rule("other", True, _spatial))
    _register((f"adaptive_avg_pool{_spatial}d", f"_adaptive_avg_pool{_spatial}d"), _pool_rule("adds", True, _spatial))


def extremum_rule(args, kwargs, out, spike) -> Counts:
    """max / min / amax / amin: one comparison per input element (a reduction or two tensors elementwise)."""
    return {"other": max(t.numel() for t in args if isinstance(t, Tensor))}


_register(("max", "min", "amax", "amin"), extremum_rule)

# Data movement, views, creation and bookkeeping: no arithmetic.
FREE_OPS: frozenset[str] = frozenset({
    "view", "_unsafe_view", "reshape", "t", "transpose", "permute", "expand", "slice", "select",
    "unsqueeze", "squeeze", "split", "split_with_sizes", "unbind", "chunk", "clone", "contiguous",
    "_to_copy", "copy", "copy_", "detach", "alias", "cat", "stack", "constant_pad_nd", "empty",
    "empty_like", "empty_strided", "zeros", "zeros_like", "ones", "ones_like", "full", "full_like",
    "new_empty", "new_zeros", "new_ones", "new_full", "new_empty_strided", "fill", "fill_", "zero_",
    "arange", "randn", "randn_like", "rand", "rand_like", "randint", "normal_", "uniform_",
    "lift_fresh", "_local_scalar_dense", "linspace", "scalar_tensor", "as_strided", "repeat",
    "flip", "roll", "index_select", "index", "gather", "narrow", "unfold", "flatten", "unflatten",
    "_reshape_alias", "resize_", "set_", "item", "is_nonzero", "lift_fresh_copy", "count_nonzero",
    "bernoulli_", "exponential_", "random_", "sym_size", "sym_stride", "sym_numel", "dim",
    "embedding",  # a table lookup (class labels): data movement, like index_select
    "_unsafe_index", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "upsample_nearest1d",
    "upsample_nearest2d", "upsample_nearest3d", "reflection_pad1d", "reflection_pad2d", "reflection_pad3d",
    "replication_pad1d", "replication_pad2d", "replication_pad3d",
})

# Ops whose result feeds values into Python or whose output shape depends on data: a module that
# runs one of them is counted op by op at every call (see :mod:`profiling.replay`).
VALUE_DEPENDENT: frozenset[str] = frozenset({
    "_local_scalar_dense", "item", "is_nonzero", "equal", "allclose", "nonzero", "nonzero_static", "argwhere",
    "masked_select", "masked_scatter", "unique", "_unique", "_unique2", "unique_consecutive", "unique_dim",
    "unique_dim_consecutive", "repeat_interleave", "bincount", "histc", "multinomial",
})


def op_base_name(func: Any) -> str:
    """``aten.add.Tensor`` -> ``add``."""
    return func.overloadpacket.__name__ if hasattr(func, "overloadpacket") else str(func)
