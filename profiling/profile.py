"""The result of a profile: per-layer records and totals, per image, with conventions.

Everything in a :class:`Profile` is per image: counts summed over the batch and
divided by the batch size, summed over every diffusion step of the workload.
Convertible to a pandas DataFrame and to JSON and back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from profiling.counter import COLUMNS, UnsupportedOp

Number = int | float

CONVENTIONS: dict[str, str] = {
    "unit": "counts per image, summed over all spiking steps T and all diffusion steps of the workload",
    "mac": "one multiply-accumulate of a synaptic op (Linear, Conv, matmul) whose inputs are real-valued; "
           "1 MAC = 2 FLOP",
    "ac": "one accumulate of a synaptic op driven by spikes: nnz(spike input) x fan-out, exact; "
          "a spike x spike product counts its coincidences",
    "dense_macs": "the MACs every synaptic op would cost dense, whatever its inputs (what fvcore/thop count)",
    "dense_macs_spiking": "dense MACs of the synaptic ops the paper convention turns into ACs "
                          "(inside a spiking block, downstream of a spiking layer)",
    "bytes": "operand bytes of synaptic ops (inputs, weights, outputs), each moved once, at storage dtype",
    "spike_detection": "by provenance: a neuron's output and data-movement views of it are spikes; "
                       "values are never inspected",
    "firing_rate": "spikes / (neurons x T): mean spikes per neuron per spiking step",
    "neuron_updates": "one membrane update (charge, fire, reset) per neuron per spiking step",
    "strict": "macs and acs columns: what the computation does, op by op",
    "paper": "macs_paper and acs_paper: the convention most SNN papers use; every synaptic op inside a "
             "spiking block costs fr x (its dense MACs over T steps) ACs, fr the firing rate of the nearest "
             "upstream spiking layer in execution order; ops before any spiking layer and outside blocks "
             "keep their strict counts",
    "other_columns": "norm (elements normalised), softmax (elements), exp (transcendental elementwise ops, "
                     "incl. 4 per WKV element), adds (elementwise adds/subs, reductions, bias adds), "
                     "muls (elementwise muls/divs), other (comparisons, max, ReLU)",
}

SUMMED = COLUMNS + ("macs_paper", "acs_paper", "dense_macs_spiking")


@dataclass(frozen=True)
class LayerRecord:
    """Counts of one layer (fully qualified module name), per image."""

    name: str
    kind: str
    macs: Number = 0
    acs: Number = 0
    dense_macs: Number = 0
    norm: Number = 0
    softmax: Number = 0
    exp: Number = 0
    adds: Number = 0
    muls: Number = 0
    other: Number = 0
    spikes: Number = 0
    neuron_updates: Number = 0
    neurons: Number = 0
    firing_rate: float | None = None
    spikes_per_step: list[Number] = field(default_factory=list)
    bytes: Number = 0
    macs_paper: Number = 0
    acs_paper: Number = 0
    dense_macs_spiking: Number = 0
    upstream_neuron: str | None = None


@dataclass(frozen=True)
class StepRecord:
    """Totals of one model call (one diffusion step), per image."""

    index: int
    t: int | None
    totals: dict[str, Number]


@dataclass(frozen=True)
class Profile:
    """Per-layer and total counts of a workload, per image.

    Attributes:
        model: Preset name or checkpoint the model came from.
        kind: ``sdit`` or ``dit``.
        workload: e.g. ``{"kind": "forward", "timestep": 500}`` or
            ``{"kind": "ddim", "steps": 50}``.
        batch_size: Images per model call while counting.
        time_steps: Spiking steps T (0 for an ANN).
        per_image: Column -> total over layers.
        layers: Per-layer records in execution order.
        steps: Per diffusion step totals.
        conventions: What every column means.
        unsupported_ops: Ops no rule covered, with counts and layers.
    """

    model: str
    kind: str
    workload: dict[str, Any]
    batch_size: int
    time_steps: int
    per_image: dict[str, Number]
    layers: list[LayerRecord]
    steps: list[StepRecord]
    conventions: dict[str, str]
    unsupported_ops: list[dict[str, Any]]

    @property
    def num_model_calls(self) -> int:
        return len(self.steps)

    def layer(self, name: str) -> LayerRecord:
        for record in self.layers:
            if record.name == name:
                return record
        raise KeyError(f"no layer named {name!r} in this profile")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        known = {f.name for f in fields(cls)}
        missing = known - set(data)
        if missing:
            raise ValueError(f"profile JSON lacks keys: {', '.join(sorted(missing))}")
        values = {k: data[k] for k in known}
        values["layers"] = [LayerRecord(**r) for r in data["layers"]]
        values["steps"] = [StepRecord(**s) for s in data["steps"]]
        return cls(**values)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Profile:
        return cls.from_dict(json.loads(text))

    def to_dataframe(self) -> Any:
        """Per-layer table (one row per layer, per image), as a pandas DataFrame."""
        import pandas as pd

        rows = [asdict(r) for r in self.layers]
        frame = pd.DataFrame(rows)
        frame["spikes_per_step"] = frame["spikes_per_step"].map(lambda v: v or None)
        return frame.set_index("name")


def workload_label(workload: dict[str, Any]) -> str:
    """``forward at t=500`` or ``ddim 50 steps``: a workload dict in words."""
    if workload["kind"] == "forward":
        return f"forward at t={workload['timestep']}"
    return f"{workload['kind']} {workload['steps']} steps"


def _per_image(value: int | float, batch: int) -> Number:
    if isinstance(value, int) and value % batch == 0:
        return value // batch
    return value / batch


def _add_by_step(total: list[Number], step: list[Number]) -> list[Number]:
    """Add one diffusion step's spikes per spiking step into the running list."""
    if not total:
        return list(step)
    if len(total) != len(step):
        raise ValueError(f"spiking steps changed between model calls: {len(total)} vs {len(step)}")
    return [a + b for a, b in zip(total, step, strict=False)]


def build_profile(
    steps: list[tuple[dict[str, Any], dict[str, dict[str, Any]]]],
    unsupported: list[UnsupportedOp],
    *,
    model: str,
    kind: str,
    workload: dict[str, Any],
    batch_size: int,
    time_steps: int,
    in_spiking_block: set[str],
) -> Profile:
    """Assemble a :class:`Profile` from :meth:`LayerCounter.finish` output."""
    totals: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    step_records = []
    for index, (meta, layers) in enumerate(steps):
        step_tot = dict.fromkeys(SUMMED, 0)
        rates = {n: r["spikes"] / r["neuron_updates"] for n, r in layers.items() if r["neuron_updates"]}
        for name, rec in layers.items():
            spiking = {u: d for u, d in rec["upstream"].items() if u is not None}
            if name in in_spiking_block and rec["upstream"]:
                macs_paper = rec["upstream"].get(None, 0)
                acs_paper = sum(rates.get(u, 0.0) * d for u, d in spiking.items())
                dense_spiking = sum(spiking.values())
            else:
                macs_paper, acs_paper, dense_spiking = rec["macs"], rec["acs"], 0
            rec = {**rec, "macs_paper": macs_paper, "acs_paper": acs_paper, "dense_macs_spiking": dense_spiking}
            if name not in totals:
                order.append(name)
                totals[name] = {"kind": rec["kind"], **dict.fromkeys(SUMMED, 0), "spikes_per_step": [],
                                "steps": 0, "upstream": {}}
            acc = totals[name]
            for column in SUMMED:
                acc[column] += rec[column]
                step_tot[column] += rec[column]
            acc["steps"] += rec["steps"]
            acc["spikes_per_step"] = _add_by_step(acc["spikes_per_step"], rec["spikes_per_step"])
            for u, d in rec["upstream"].items():
                acc["upstream"][u] = acc["upstream"].get(u, 0) + d
        step_records.append(StepRecord(
            index=index, t=meta.get("t"),
            totals={c: _per_image(v, batch_size) for c, v in step_tot.items()},
        ))
    layers_out = []
    for name in order:
        acc = totals[name]
        if not any(acc[c] for c in SUMMED):
            continue  # containers whose ops are all in children
        upstream = {u: d for u, d in acc["upstream"].items() if u is not None}
        layers_out.append(LayerRecord(
            name=name,
            kind=acc["kind"],
            **{c: _per_image(acc[c], batch_size) for c in SUMMED},
            neurons=_per_image(acc["neuron_updates"], batch_size * acc["steps"]) if acc["steps"] else 0,
            firing_rate=(acc["spikes"] / acc["neuron_updates"]) if acc["neuron_updates"] else None,
            spikes_per_step=[_per_image(v, batch_size) for v in acc["spikes_per_step"]],
            upstream_neuron=max(upstream, key=upstream.get) if upstream else None,
        ))
    per_image = {c: sum(getattr(r, c) for r in layers_out) for c in SUMMED}
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
    )
