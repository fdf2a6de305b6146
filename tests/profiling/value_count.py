"""An independent AC / MAC count by value, for the tests: no provenance, no rules of the profiler.

Every synaptic op (convolution, mm, addmm, bmm, baddbmm) is looked at while it runs: an operand whose
values are all 0 or 1 (and not all 0) is a spike operand. Its ACs are nnz x fan-out, computed here
another way than the profiler does (convolutions through ``unfold``: each output position reads its
window's non-zeros once per output channel); a spike x spike product counts its coincidences; every
other synaptic op is dense MACs.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


def _binary(t: Tensor) -> bool:
    if t.numel() == 0 or not (t.is_floating_point() or t.dtype == torch.bool):
        return False
    return bool(((t == 0) | (t == 1)).all())


def _conv_acs(x: Tensor, w: Tensor, stride, padding, dilation, groups: int) -> int:
    """Sum over output positions and channels of the non-zero inputs each reads (``unfold`` of the indicator)."""
    if x.dim() != 4:  # conv1d: a 2-d conv of height 1
        x, w = x.unsqueeze(2), w.unsqueeze(2)
        stride, padding, dilation = (1, *stride), (0, *padding), (1, *dilation)
    ind = (x != 0).to(torch.float64)
    per_group_in, out_per_group = x.shape[1] // groups, w.shape[0] // groups
    total = 0
    for g in range(groups):
        cols = F.unfold(ind[:, g * per_group_in:(g + 1) * per_group_in], w.shape[2:], dilation=dilation,
                        padding=padding, stride=stride)  # (B, C_in/g * k, L): each column is one window
        total += int(cols.sum().item()) * out_per_group
    return total


def _matmul(a: Tensor, b: Tensor) -> tuple[int, int]:
    """(MACs, ACs) of a @ b over any batch dims, by value."""
    n, k, m = a.shape[-2], a.shape[-1], b.shape[-1]
    batch = math.prod(a.shape[:-2])
    sa, sb = _binary(a), _binary(b)
    if sa and sb:
        return 0, int(((a != 0).to(torch.float64) @ (b != 0).to(torch.float64)).sum().item())
    if sa:
        return 0, int((a != 0).sum().item()) * m
    if sb:
        return 0, int((b != 0).sum().item()) * n
    return batch * n * k * m, 0


class ValueCount(TorchDispatchMode):
    """``with ValueCount() as c: model(x)``; then ``c.macs`` and ``c.acs`` (whole batch)."""

    def __init__(self) -> None:
        super().__init__()
        self.macs = 0
        self.acs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        macs = acs = 0
        if func is aten.convolution.default:
            x, w, transposed, groups = args[0], args[1], args[6], args[8]
            if transposed:
                raise NotImplementedError("transposed convolutions are not in the peer models")
            if _binary(x):
                acs = _conv_acs(x, w, args[3], args[4], args[5], groups)
            else:
                macs = out.numel() * w.shape[1] * math.prod(w.shape[2:])
        elif func in (aten.mm.default, aten.bmm.default):
            macs, acs = _matmul(args[0], args[1])
        elif func in (aten.addmm.default, aten.baddbmm.default):
            macs, acs = _matmul(args[1], args[2])
        self.macs += macs
        self.acs += acs
        return out


@torch.no_grad()
def value_count(model: torch.nn.Module, *inputs: Tensor, also: Any = None) -> tuple[int, int]:
    """(MACs, ACs) of one forward of ``model`` on ``inputs``, whole batch, by value; spikingjelly state
    reset before and after. ``also``: another dispatch mode to run in the same forward (a peer's counter)."""
    from spikingjelly.activation_based import functional

    model.eval()
    functional.reset_net(model)
    with contextlib.ExitStack() as stack:
        if also is not None:
            stack.enter_context(also)
        counter = stack.enter_context(ValueCount())
        model(*inputs)
    functional.reset_net(model)
    return counter.macs, counter.acs
