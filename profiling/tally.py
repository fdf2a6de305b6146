"""Running per-layer counts of the counter, and their resolution into plain ints at the end.

Integer counts are summed as they come; data-dependent counts (ACs of spike inputs, spikes per step)
stay 0-dim or (steps,) device tensors until :func:`resolve_steps`, which moves them all to the host
in one go per device: a long sampling run costs one synchronisation, not one per op.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from profiling.records import COLUMNS
from profiling.rules import Counts

Step = tuple[dict[str, Any], dict[str, "LayerTally"]]  # (meta, layer -> tally)


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
    for _, layers in steps:
        for tally in layers.values():
            for values in tally.pending.values():
                pending.extend(values)
            pending.extend(tally.spikes_per_step)
    resolved = _resolve(pending)
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


def _resolve(pending: list[Tensor]) -> Callable[[Any], Any]:
    """Move all pending device tensors to host in one go per device; return a lookup.

    0-dim counts are stacked and per-step vectors concatenated, so a long sampling run costs two
    small ops and one copy per device, not an op per count.
    """
    values: dict[int, Any] = {}
    groups: dict[tuple[torch.device, bool], list[Tensor]] = defaultdict(list)
    for t in pending:
        groups[(t.device, t.dim() == 0)].append(t)
    for (_, scalar), tensors in groups.items():
        as_int = [t if t.dtype == torch.int64 else t.to(torch.int64) for t in tensors]
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
