"""Assembling a :class:`~profiling.records.Profile` from the counter's raw per-step tallies.

Pure Python (no torch); the record types live in :mod:`profiling.records`.
"""

from __future__ import annotations

import math
import operator
from dataclasses import asdict
from typing import Any

from profiling.records import (
    COLUMNS,
    CONVENTIONS,
    NO_UPSTREAM,
    LayerRecord,
    LayerStepRecord,
    Number,
    Profile,
    StepRecord,
    UnsupportedOp,
    Workload,
)

__all__ = ["build_profile"]


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


_counted = operator.itemgetter(*COLUMNS)  # a raw record's counted columns, in COLUMNS order
# The fields of a LayerStepRecord in the order build_profile lays out their values: COLUMNS, then these.
_STEP_KEYS = (*COLUMNS, "step", "t", "layer", "firing_rate", "spikes_per_step", "upstream")


def _layer_step(values: tuple[Any, ...]) -> LayerStepRecord:
    """The record of ``values`` (one per :data:`_STEP_KEYS`, which a test keeps equal to its fields): what
    :meth:`LayerStepRecord.of` makes, without building and checking a dict per record (~2,250 records
    in a DDIM-50 run of dit-small, whose whole profiled run is ~1.3x a plain one)."""
    record = object.__new__(LayerStepRecord)
    record.__dict__.update(zip(_STEP_KEYS, values))
    return record


def _upstream_out(upstream: dict[str | None, Number], batch_size: int) -> dict[str, Number]:
    """Dense MACs by upstream neuron per image, JSON keys (``None`` -> :data:`NO_UPSTREAM`)."""
    if batch_size == 1:
        return {(NO_UPSTREAM if u is None else u): d for u, d in upstream.items()}
    return {(NO_UPSTREAM if u is None else u): _per_image(d, batch_size) for u, d in upstream.items()}


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
    precisions: dict[str, str] | None = None,
) -> Profile:
    """Assemble a :class:`Profile` from :meth:`profiling.counter.LayerCounter.finish` output.

    Per model call and layer, the raw counts (whole batch) become a :class:`LayerStepRecord`
    per image; layer totals and step totals are exact sums of those records.
    """
    blocks = blocks or {}
    steps = list(steps)  # walked twice
    order: list[str] = []
    kinds: dict[str, str] = {}
    spiking_steps: dict[str, int] = {}  # spiking steps run per layer, over all model calls
    values: dict[str, list[tuple[Number, ...]]] = {}  # layer -> per model call, its COLUMNS per image
    # per model call: per layer its COLUMNS per image (a tuple in COLUMNS order), and the call's rates
    per_call: list[tuple[dict[str, tuple[Number, ...]], dict[str, float]]] = []
    for _meta, layers in steps:
        rates = {n: r["spikes"] / r["neuron_updates"] for n, r in layers.items() if r["neuron_updates"]}
        here: dict[str, tuple[Number, ...]] = {}
        for name, rec in layers.items():
            if name not in kinds:
                order.append(name)
                kinds[name] = rec["kind"]
                values[name] = []
                spiking_steps[name] = 0
            full = _counted(rec)
            per_image = (full if batch_size == 1  # x / 1 is x, for ints and floats
                         else tuple([_per_image(v, batch_size) for v in full]))
            values[name].append(per_image)
            here[name] = per_image
            spiking_steps[name] += rec["steps"]
        per_call.append((here, rates))

    sums_of: dict[str, dict[str, Number]] = {}
    for name in order:
        sums = {c: _sum(column) for c, column in zip(COLUMNS, zip(*values[name], strict=True), strict=True)}
        if any(sums.values()):  # containers whose ops are all in children are left out
            sums_of[name] = sums
    kept_order = [name for name in order if name in sums_of]

    # Per model call: the kept layers' records (what the layer totals' spikes and upstream sum) and step totals.
    layer_steps: list[LayerStepRecord] = []
    step_records: list[StepRecord] = []
    kept_values: list[tuple[Number, ...]] = []
    spikes_of: dict[str, list[Number]] = {name: [] for name in kept_order}
    upstream_of: dict[str, dict[str, Number]] = {name: {} for name in kept_order}
    zeros = dict.fromkeys(COLUMNS, 0)
    for index, ((meta, layers), (here, rates)) in enumerate(zip(steps, per_call, strict=True)):
        t = meta.get("t")
        names = [name for name in kept_order if name in here]
        for name in names:
            rec = layers[name]
            spikes = rec["spikes_per_step"]
            spikes = list(spikes) if batch_size == 1 else [_per_image(v, batch_size) for v in spikes]
            upstream = _upstream_out(rec["upstream"], batch_size)
            layer_steps.append(_layer_step((*here[name], index, t, name, rates.get(name), spikes, upstream)))
            if spikes or spikes_of[name]:
                spikes_of[name] = _add_by_step(spikes_of[name], spikes)
            total = upstream_of[name]
            for u, d in upstream.items():
                total[u] = total.get(u, 0) + d
        rows = [here[name] for name in names]
        kept_values.extend(rows)
        totals = ({c: _sum(column) for c, column in zip(COLUMNS, zip(*rows, strict=True), strict=True)} if rows
                  else dict(zeros))
        step_records.append(StepRecord(index=index, t=t, totals=totals))

    layers_out: list[LayerRecord] = []
    for name in kept_order:
        sums = sums_of[name]
        spiking_up = {u: d for u, d in upstream_of[name].items() if u != NO_UPSTREAM}
        layers_out.append(LayerRecord(
            name=name,
            kind=kinds[name],
            **sums,
            neurons=_per_image(sums["neuron_updates"], spiking_steps[name]) if spiking_steps[name] else 0,
            firing_rate=(sums["spikes"] / sums["neuron_updates"]) if sums["neuron_updates"] else None,
            spikes_per_step=spikes_of[name],
            upstream_neuron=max(spiking_up, key=spiking_up.get) if spiking_up and name in in_spiking_block else None,
            block=blocks.get(name),
            precision=(precisions or {}).get(name, "fp32"),
        ))
    per_image = {}
    for i, c in enumerate(COLUMNS):
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
