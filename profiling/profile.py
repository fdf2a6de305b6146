"""Assembling a :class:`~profiling.records.Profile` from the counter's raw per-step tallies.

Pure Python (no torch): the record types live in :mod:`profiling.records` and are
re-exported here for code written before that module existed.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from profiling.records import (
    COLUMNS,
    CONVENTIONS,
    NO_UPSTREAM,
    SUMMED,
    LayerRecord,
    LayerStepRecord,
    Number,
    Profile,
    StepRecord,
    UnsupportedOp,
    Workload,
    workload_label,
)

__all__ = [
    "CONVENTIONS", "SUMMED", "LayerRecord", "LayerStepRecord", "Profile", "StepRecord", "build_profile",
    "workload_label",
]


def _per_image(value: int | float, batch: int) -> Number:
    if isinstance(value, int) and value % batch == 0:
        return value // batch
    return value / batch


def _sum(values: list[Number]) -> Number:
    """:func:`profiling.records.exact_sum`, fast: a plain sum stays an int only if every value is one."""
    total = sum(values)
    return total if isinstance(total, int) else math.fsum(values)


def _add_by_step(total: list[Number], step: list[Number]) -> list[Number]:
    """Add one diffusion step's spikes per spiking step into the running list."""
    if not total:
        return list(step)
    if len(total) != len(step):
        raise ValueError(f"spiking steps changed between model calls: {len(total)} vs {len(step)}")
    return [a + b for a, b in zip(total, step, strict=True)]


def _paper_split(rec: dict[str, Any], in_block: bool, rates: dict[str, float]) -> tuple[Number, Number, Number]:
    """(macs_paper, acs_paper, dense_macs_spiking) of one layer in one model call (raw, whole batch)."""
    upstream = rec["upstream"]
    if in_block and upstream:
        spiking = {u: d for u, d in upstream.items() if u is not None}
        return upstream.get(None, 0), sum(rates.get(u, 0.0) * d for u, d in spiking.items()), sum(spiking.values())
    return rec["macs"], rec["acs"], 0


def build_profile(
    steps: list[tuple[dict[str, Any], dict[str, dict[str, Any]]]],
    unsupported: list[UnsupportedOp],
    *,
    model: str,
    kind: str,
    workload: Workload,
    batch_size: int,
    time_steps: int,
    in_spiking_block: set[str],
    blocks: dict[str, str] | None = None,
) -> Profile:
    """Assemble a :class:`Profile` from :meth:`profiling.counter.LayerCounter.finish` output.

    Per model call and layer, the raw counts (whole batch) become a :class:`LayerStepRecord`
    per image; layer totals and step totals are exact sums of those records.
    """
    blocks = blocks or {}
    order: list[str] = []
    kinds: dict[str, str] = {}
    # per model call: index, t, per layer its record and its SUMMED columns per image (a tuple in SUMMED order)
    raw_steps: list[tuple[int, int | None, dict[str, LayerStepRecord], dict[str, tuple[Number, ...]]]] = []
    spiking_steps: dict[str, int] = {}  # spiking steps run per layer, over all model calls
    values: dict[str, list[tuple[Number, ...]]] = {}  # layer -> per model call, its SUMMED columns per image
    for index, (meta, layers) in enumerate(steps):
        rates = {n: r["spikes"] / r["neuron_updates"] for n, r in layers.items() if r["neuron_updates"]}
        per_layer: dict[str, LayerStepRecord] = {}
        per_values: dict[str, tuple[Number, ...]] = {}
        t = meta.get("t")
        for name, rec in layers.items():
            if name not in kinds:
                order.append(name)
                kinds[name] = rec["kind"]
                values[name] = []
            # the counted columns, then the paper columns: the order of SUMMED
            full = (*(rec[c] for c in COLUMNS), *_paper_split(rec, name in in_spiking_block, rates))
            per_image = (full if batch_size == 1  # x / 1 is x, for ints and floats
                         else tuple([_per_image(v, batch_size) for v in full]))
            values[name].append(per_image)
            per_values[name] = per_image
            fields = dict(zip(SUMMED, per_image, strict=True))
            fields.update(
                step=index, t=t, layer=name,
                firing_rate=rates.get(name),
                spikes_per_step=(list(rec["spikes_per_step"]) if batch_size == 1
                                 else [_per_image(v, batch_size) for v in rec["spikes_per_step"]]),
                upstream={(NO_UPSTREAM if u is None else u): (d if batch_size == 1 else _per_image(d, batch_size))
                          for u, d in rec["upstream"].items()},
            )
            per_layer[name] = LayerStepRecord.of(fields)
            spiking_steps[name] = spiking_steps.get(name, 0) + rec["steps"]
        raw_steps.append((index, t, per_layer, per_values))

    layers_out: list[LayerRecord] = []
    kept: set[str] = set()
    for name in order:
        sums = {c: _sum(column) for c, column in zip(SUMMED, zip(*values[name], strict=True), strict=True)}
        if not any(sums.values()):
            continue  # containers whose ops are all in children
        kept.add(name)
        records = [layers[name] for _, _, layers, _ in raw_steps if name in layers]
        spikes_per_step: list[Number] = []
        upstream: dict[str, Number] = {}
        for r in records:
            if r.spikes_per_step or spikes_per_step:
                spikes_per_step = _add_by_step(spikes_per_step, r.spikes_per_step)
            for u, d in r.upstream.items():
                upstream[u] = upstream.get(u, 0) + d
        spiking_up = {u: d for u, d in upstream.items() if u != NO_UPSTREAM}
        layers_out.append(LayerRecord(
            name=name,
            kind=kinds[name],
            **sums,
            neurons=_per_image(sums["neuron_updates"], spiking_steps[name]) if spiking_steps[name] else 0,
            firing_rate=(sums["spikes"] / sums["neuron_updates"]) if sums["neuron_updates"] else None,
            spikes_per_step=spikes_per_step,
            upstream_neuron=max(spiking_up, key=spiking_up.get) if spiking_up and name in in_spiking_block else None,
            block=blocks.get(name),
        ))
    layer_steps: list[LayerStepRecord] = []
    step_records: list[StepRecord] = []
    kept_order = [name for name in order if name in kept]
    kept_values: list[tuple[Number, ...]] = []
    zeros = dict.fromkeys(SUMMED, 0)
    for index, t, layers, per_values in raw_steps:
        names = [name for name in kept_order if name in layers]
        layer_steps.extend(layers[name] for name in names)
        here = [per_values[name] for name in names]
        kept_values.extend(here)
        totals = ({c: _sum(column) for c, column in zip(SUMMED, zip(*here, strict=True), strict=True)} if here
                  else dict(zeros))
        step_records.append(StepRecord(index=index, t=t, totals=totals))
    per_image = {}
    for i, c in enumerate(SUMMED):
        totals = [s.totals[c] for s in step_records]
        # an int step total means every value in it was an int: their sum is exact in any grouping
        per_image[c] = sum(totals) if all(type(v) is int for v in totals) else math.fsum(v[i] for v in kept_values)
    return Profile(
        model=model,
        kind=kind,
        workload=workload,
        batch_size=batch_size,
        time_steps=time_steps,
        per_image=per_image,
        layers=layers_out,
        steps=step_records,
        conventions=dict(CONVENTIONS),
        unsupported_ops=[asdict(u) for u in unsupported],
        layer_steps=layer_steps,
    )
