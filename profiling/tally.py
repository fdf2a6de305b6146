"""Running per-layer counts of the counter, and their resolution into plain ints at the end.

Integer counts are summed as they come; data-dependent counts (ACs of spike inputs, spikes per step)
stay 0-dim or (steps,) device tensors until :func:`resolve_steps`, which moves them all to the host
in one go per device: a long sampling run costs one synchronisation, not one per op.

The data-movement counts memory models read (:func:`synaptic_memory`, :func:`neuron_memory`) are counted
here too, per synaptic module call and per neuron layer call, in functions of their own.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from profiling.records import COLUMNS
from profiling.rules import Counts

Step = tuple[dict[str, Any], dict[str, "LayerTally"]]  # (meta, layer -> tally)
FLOAT_COLUMNS = frozenset({"input_rated_acs"})  # device counts read as floats (rates x MACs), not ints


def input_rate(x: Tensor, dense: int) -> Counts:
    """The published Spikformer SOPs of one synaptic op whose input ``x`` is spikes or counts of spikes:
    nnz(x) / numel(x) x its ``dense`` MACs (a 0-dim float64 device tensor: no synchronisation), and ``dense``."""
    if not dense or x.numel() == 0:
        return {}
    with _hidden(), torch.no_grad():
        rated = torch.count_nonzero(x).to(torch.float64) * (dense / x.numel())
    return {"input_rated_acs": rated, "input_rated_dense": dense}


class LayerTally:
    """Running counts of one layer (over one diffusion step or a whole forward).

    Integer counts are summed as they come (``totals``); data-dependent counts are 0-dim device
    tensors kept in ``pending`` until :func:`resolve_steps` reads them all at once. A plain
    slotted class: a replayed DiT step makes one per layer (~45), a dataclass's default factories
    cost about 3x as much.
    """

    __slots__ = ("kind", "totals", "pending", "spikes_per_step", "steps", "upstream")

    def __init__(self, kind: str, totals: dict[str, int] | None = None) -> None:
        self.kind = kind
        self.totals: dict[str, int] = {} if totals is None else totals
        self.pending: dict[str, list[Tensor]] = {}
        self.spikes_per_step: list[Any] = []  # neuron layers: per spiking step
        self.steps = 0  # neuron layers: spiking steps run
        self.upstream: dict[str | None, int] = defaultdict(int)  # dense MACs by upstream neuron

    def add(self, counts: Counts) -> None:
        totals = self.totals
        for column, value in counts.items():
            if isinstance(value, Tensor):
                self.pending.setdefault(column, []).append(value)
            else:
                totals[column] = totals.get(column, 0) + value


def resolve_steps(steps: list[Step]) -> list[tuple[dict[str, Any], dict[str, dict[str, Any]]]]:
    """Per step its meta and, per layer, a dict with ``kind``, every column of :data:`COLUMNS`,
    ``spikes_per_step`` (neurons), ``steps`` (spiking steps run) and ``upstream`` (dense MACs by
    upstream neuron); all device counts are read in one synchronisation."""
    pending: list[Tensor] = []
    floats: set[int] = set()
    for _, layers in steps:
        for tally in layers.values():
            for column, values in tally.pending.items():
                pending.extend(values)
                if column in FLOAT_COLUMNS:
                    floats.update(map(id, values))
            pending.extend(tally.spikes_per_step)
    resolved = _resolve(pending, floats)
    zero = dict.fromkeys(COLUMNS, 0)
    out = []
    for meta, layers in steps:
        out_layers = {}
        for name, tally in layers.items():
            record: dict[str, Any] = {"kind": tally.kind, **zero, **tally.totals}
            for column, values in tally.pending.items():
                record[column] = record.get(column, 0) + sum(map(resolved, values))
            per_call = [resolved(v) for v in tally.spikes_per_step]
            if per_call:
                record["spikes"] += sum(sum(c) for c in per_call)
            record["spikes_per_step"] = _sum_by_step(per_call)
            record["steps"] = tally.steps
            record["upstream"] = dict(tally.upstream)
            out_layers[name] = record
        out.append((meta, out_layers))
    return out


def _resolve(pending: list[Tensor], floats: set[int] = frozenset()) -> Callable[[Any], Any]:
    """Move all pending device tensors to host in one go per device; return a lookup. Counts are ints,
    but for the tensors whose id is in ``floats`` (a column of :data:`FLOAT_COLUMNS`), read as floats.

    0-dim counts are stacked and per-step vectors concatenated, so a long sampling run costs two
    small ops and one copy per device, not an op per count.
    """
    values: dict[int, Any] = {}
    groups: dict[tuple[torch.device, bool], list[Tensor]] = defaultdict(list)
    for t in pending:
        groups[(t.device, t.dim() == 0, id(t) in floats)].append(t)
    for (_, scalar, real), tensors in groups.items():
        kind = torch.float64 if real else torch.int64  # float counts (input firing rates x MACs) stay floats
        as_int = [t if t.dtype == kind else t.to(kind) for t in tensors]
        if scalar:
            for t, v in zip(tensors, torch.stack(as_int).tolist(), strict=True):
                values[id(t)] = v
            continue
        flat = torch.cat([t.reshape(-1) for t in as_int]).tolist()
        offset = 0
        for t in tensors:
            n = t.numel()
            values[id(t)] = flat[offset : offset + n]
            offset += n

    def lookup(v: Any) -> Any:
        return values[id(v)] if isinstance(v, Tensor) else v

    return lookup


def _sum_by_step(per_call: list[list[int]]) -> list[int]:
    """Spikes per spiking step, summed over calls (multi-step) or listed by call (single-step)."""
    if not per_call:
        return []
    if all(len(c) == len(per_call[0]) for c in per_call) and len(per_call[0]) > 1:
        return [sum(c[i] for c in per_call) for i in range(len(per_call[0]))]
    return [v for c in per_call for v in c]


# ---- data movement: the counts memory models need (profiling.records.MEMORY_CONVENTIONS) -------------------
# Counted by module, as spikingjelly's and Lemaire et al.'s estimators do: a synaptic module's call (its weights,
# its input and output) and a neuron layer's state. Every op they run here is hidden from the counter's
# dispatch mode (and from any other Python dispatch mode) by the exclusion guard.

SYNAPTIC_MODULES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONVS = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}


def _hidden() -> Any:
    """A guard under which ops run unseen by Python dispatch modes (the counter's included)."""
    return torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(torch._C.DispatchKey.Python))


def _first_tensor(args: Any, kwargs: Any) -> Tensor | None:
    for value in (*args, *(kwargs or {}).values()):
        if isinstance(value, Tensor):
            return value
    return None


def _conv_weight_uses(module: nn.Module, x: Tensor) -> Tensor:
    """Weights a spike input ``x`` of conv ``module`` touches: per output position, the spikes in its window,
    times the output channels of the group; exact at borders, strides and dilations (0-dim int64 tensor)."""
    conv = next(f for cls, f in _CONVS.items() if isinstance(module, cls))
    w = module.weight
    padding = module.padding
    if module.padding_mode != "zeros":
        x = F.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode)
        padding = 0
    ones = torch.ones((module.groups, *w.shape[1:]), dtype=torch.float64, device=x.device)
    hits = conv((x != 0).to(torch.float64), ones, None, module.stride, padding, module.dilation, module.groups)
    return hits.sum().round().to(torch.int64) * (w.shape[0] // module.groups)


def _is_integer_linear(module: nn.Module) -> bool:
    """A Linear that computes in integers (``sdit.models.quant.QuantLinear``: it declares ``precision``): its
    weights move at their storage width (int8, also for fewer bits)."""
    weight = getattr(module, "weight", None)
    return (isinstance(getattr(module, "precision", None), str) and isinstance(weight, Tensor) and weight.ndim == 2
            and not weight.dtype.is_floating_point)


def synaptic_memory(module: nn.Module, args: Any, kwargs: Any, out: Any, spike: Callable[[Any], bool]) -> Counts:
    """The data-movement counts of one call of a synaptic module (``{}`` for any other module).

    Counts that depend on the spikes are 0-dim device tensors, like ACs (no synchronisation here).
    """
    integer = _is_integer_linear(module)
    if not (integer or isinstance(module, SYNAPTIC_MODULES)) or not isinstance(out, Tensor):
        return {}
    x = _first_tensor(args, kwargs)
    if x is None:
        return {}
    weight, bias = module.weight, module.bias
    linear = integer or isinstance(module, nn.Linear)
    fan_in = weight.shape[-1] if linear else math.prod(weight.shape[1:])
    kernel = 1 if linear else math.prod(weight.shape[2:])
    fan_out = weight.shape[0] if linear else weight.shape[0] // module.groups * kernel
    params = weight.numel() + (0 if bias is None else bias.numel())
    n_out = out.numel()
    counts: Counts = {
        "syn_calls": 1, "param_elements": params,
        "param_bytes": (weight.numel() * weight.element_size()
                        + (0 if bias is None else bias.numel() * bias.element_size())),
        "bias_uses": 0 if bias is None else n_out,
        "bias_reads": 0 if bias is None else n_out * bias.element_size(),
    }
    with _hidden(), torch.no_grad():
        if spike(x):
            multi = getattr(module, "step_mode", "s") == "m"
            steps = x.shape[0] if multi else 1
            events = torch.count_nonzero(x)
            if linear:
                uses = events * weight.shape[0]
            else:
                uses = _conv_weight_uses(module, x.flatten(0, 1) if multi else x)
            fanout = events * fan_out
            counts.update({
                "weight_uses": uses, "weight_reads": uses * weight.element_size(), "spike_calls": 1,
                "spike_events": events, "spike_fanout": fanout, "in_reads": events, "spike_out": n_out // steps,
                "addr_acc": fanout, "addr_mac": 0 if linear else 2 * events,
            })
            return counts
    dense = n_out * fan_in
    counts.update({
        "weight_uses": dense, "weight_reads": dense * weight.element_size(), "syn_in": x.numel(), "syn_out": n_out,
        "in_reads": x.numel() if linear else dense,
        "addr_acc": x.numel() + n_out, "addr_kernel": 0 if linear else weight.shape[0] * kernel,
    })
    return counts


def neuron_memory(module: nn.Module, out: Tensor) -> Counts:
    """State traffic of one call of a neuron layer: the bytes of its state tensors (spikingjelly's
    ``memories()``: the membrane potential) once per spiking step; ``{}`` for a neuron without them."""
    memories = getattr(module, "memories", None)
    if memories is None:
        return {}
    state = sum(t.numel() * t.element_size() for t in memories() if isinstance(t, Tensor))
    if not state:
        return {}
    steps = out.shape[0] if getattr(module, "step_mode", "s") == "m" else 1
    return {"state_bytes": state * steps}
