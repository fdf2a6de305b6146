"""Records of a profile, torch-free: the workload, per-layer, per-step and per-layer-per-step counts.

This is the ground floor of :mod:`profiling`: pure data, importing no other module of the package
and no torch. The counting engine (:mod:`profiling.counter`, :mod:`profiling.workloads`) builds these
records; :mod:`profiling.conventions` and :mod:`profiling.energy` read them.

Everything in a :class:`Profile` is per image: counts summed over the batch and divided
by the batch size. A profile of a sampling run keeps three views of the same counts:

- ``layer_steps``: one :class:`LayerStepRecord` per layer per diffusion step (long format);
- ``layers``: one :class:`LayerRecord` per layer, the sum of its ``layer_steps`` over steps;
- ``steps``: one :class:`StepRecord` per diffusion step, the sum of its ``layer_steps`` over layers.

Integer columns sum exactly; float columns (counts per image of a batch that does not divide them)
are summed with :func:`math.fsum`, so a layer's total is the correctly rounded sum of its steps. The
records hold counts only: how a counting convention charges them is computed from them by
:mod:`profiling.conventions`, never stored beside them.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from sdit.workload import Workload

Number = int | float

# Columns the counting rules fill per op (profiling.rules) and the neuron rule fills per neuron layer.
OP_COLUMNS = ("macs", "acs", "dense_macs", "norm", "softmax", "exp", "adds", "muls", "other", "bytes")
NEURON_COLUMNS = ("spikes", "neuron_updates")
# Data-movement counts of synaptic modules (Linear, Conv) and neuron layers, what the memory models of
# profiling.memory read (profiling.tally counts them; see MEMORY_CONVENTIONS for each).
MEMORY_COLUMNS = ("weight_uses", "weight_reads", "bias_uses", "bias_reads", "param_elements", "param_bytes",
                  "state_bytes", "syn_calls", "syn_in", "syn_out", "in_reads", "spike_calls", "spike_events",
                  "spike_fanout", "spike_out", "addr_acc", "addr_kernel", "addr_mac")
# Counted once per call, whatever the batch: per image they amortise over it (like a weight's bytes).
PER_CALL_COLUMNS = ("param_elements", "param_bytes", "syn_calls", "spike_calls", "addr_kernel")
# The firing rates of synaptic ops' actual inputs, what the spikformer convention reads: over the ops whose input
# is spikes or counts of spikes (sums, pools of spikes), sum of nnz(input) / numel(input) x dense MACs, and their
# dense MACs.
RATE_COLUMNS = ("input_rated_acs", "input_rated_dense")
# The counted columns, summed over layers and steps.
COLUMNS = OP_COLUMNS + NEURON_COLUMNS + MEMORY_COLUMNS + RATE_COLUMNS
# Schema of Profile.to_dict(); what reads an older one is named in the error.
PROFILE_SCHEMA = "sdit.profile/4"
OLDER_PROFILE_READERS = {
    None: "sdit 0.1.0 (profiles with paper-convention columns, schema sdit.profile/1 or none)",
    "sdit.profile/1": "sdit 0.1.0 (profiles with paper-convention columns, schema sdit.profile/1 or none)",
    "sdit.profile/2": "sdit 0.2.0 (profiles without data-movement columns, schema sdit.profile/2)",
    "sdit.profile/3": "sdit 0.2.0 (profiles without input firing-rate columns, schema sdit.profile/3)",
}
OLDER_PROFILE_READER = OLDER_PROFILE_READERS[None]

# Key of ``upstream`` for dense MACs that no spiking layer precedes (JSON keys are strings).
NO_UPSTREAM = "(none)"

CONVENTIONS: dict[str, str] = {
    "unit": "counts per image, summed over all spiking steps T and all diffusion steps of the workload",
    "mac": "one multiply-accumulate of a synaptic op (Linear, Conv, matmul) whose inputs are real-valued; "
           "1 MAC = 2 FLOP",
    "ac": "one accumulate of a synaptic op driven by spikes: nnz(spike input) x fan-out, exact; "
          "a spike x spike product counts its coincidences",
    "dense_macs": "the MACs every synaptic op would cost dense, whatever its inputs (what fvcore/thop count)",
    "bytes": "operand bytes of synaptic ops (inputs, weights, outputs), each moved once, at storage dtype",
    "spike_detection": "by provenance: a neuron's output and data-movement views of it are spikes; "
                       "values are never inspected",
    "firing_rate": "spikes / (neurons x T): mean spikes per neuron per spiking step",
    "neuron_updates": "one membrane update (charge, fire, reset) per neuron per spiking step",
    "upstream": "dense MACs of a layer's synaptic ops by their nearest upstream neuron in the spike graph: the "
                "latest-called neuron whose spikes reach the op's inputs through any ops in that model call "
                "('(none)': no neuron's spikes reach them)",
    "block": "the spiking block a layer belongs to: its outermost ancestor below the model (not a "
             "ModuleList/ModuleDict) that holds a spiking neuron but not every neuron of the model",
    "input_rated_acs": "over synaptic ops whose input is spikes or counts of spikes: nnz(input) / numel(input) x "
                       "dense MACs (the published Spikformer SOPs); input_rated_dense: their dense MACs",
    "per_step": "steps and layer_steps: the same counts per diffusion step (one model call each); "
                "summed over steps they give the layer totals",
    "memory_columns": "data movement of synaptic modules (nn.Linear, nn.Conv1d/2d/3d, matched by module) and "
                      "neuron layers; see MEMORY_CONVENTIONS",
    "other_columns": "norm (elements normalised), softmax (elements), exp (transcendental elementwise ops, "
                     "incl. 4 per WKV element), adds (elementwise adds/subs, reductions, bias adds), "
                     "muls (elementwise muls/divs), other (comparisons, max, ReLU)",
}

# What each data-movement column counts, per image (a call is one forward of a synaptic module; a
# spike input is one whose provenance is a neuron, as for ACs).
MEMORY_CONVENTIONS: dict[str, str] = {
    "weight_uses": "weights a synaptic module's call uses: real-valued input, its dense MACs; spike input, the "
                   "weights its spikes touch (nnz x fan-out, exact at borders and strides)",
    "weight_reads": "bytes of weight_uses at the weights' storage width (every weight read at each use)",
    "bias_uses": "bias elements read: one per output element of a call with a bias",
    "bias_reads": "bytes of bias_uses at the bias's storage width",
    "param_elements": "elements of a synaptic module's own weights and bias, once per call",
    "param_bytes": "bytes of param_elements at storage width",
    "state_bytes": "bytes of a neuron layer's state tensors (its membrane potential) per spiking step, summed "
                   "over steps: read once and written once each step",
    "syn_calls": "calls of synaptic modules",
    "syn_in": "input elements of calls with a real-valued input",
    "syn_out": "output elements of calls with a real-valued input",
    "in_reads": "input elements a call reads: a Linear its input once, a Conv with a real-valued input its "
                "input window once per weight use (its dense MACs), a spike input its spikes (nnz)",
    "spike_calls": "calls of synaptic modules with a spike input",
    "spike_events": "spikes (non-zeros) in the spike inputs of synaptic modules",
    "spike_fanout": "spike_events x the weights each touches as Lemaire et al. count it (Linear: out_features; "
                    "Conv: out_channels / groups x kernel elements, borders ignored)",
    "spike_out": "output elements per spiking step of calls with a spike input (a multi-step module's output / T)",
    "addr_acc": "address additions of synaptic modules as Lemaire et al. count them (event-driven: spike_fanout; "
                "dense: input + output elements)",
    "addr_kernel": "address additions of a Conv with a real-valued input over its kernel, out_channels x kernel "
                   "elements, once per call (Lemaire et al.)",
    "addr_mac": "address multiplications: two per spike into a Conv (Lemaire et al.)",
}


@dataclass(frozen=True)
class LayerRecord:
    """Counts of one layer (fully qualified module name), per image, summed over diffusion steps."""

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
    spikes_per_step: list[Number] = field(default_factory=list)  # per spiking step T, summed over diffusion steps
    bytes: Number = 0
    weight_uses: Number = 0
    weight_reads: Number = 0
    bias_uses: Number = 0
    bias_reads: Number = 0
    param_elements: Number = 0
    param_bytes: Number = 0
    state_bytes: Number = 0
    syn_calls: Number = 0
    syn_in: Number = 0
    syn_out: Number = 0
    in_reads: Number = 0
    spike_calls: Number = 0
    spike_events: Number = 0
    spike_fanout: Number = 0
    spike_out: Number = 0
    addr_acc: Number = 0
    addr_kernel: Number = 0
    addr_mac: Number = 0
    input_rated_acs: Number = 0
    input_rated_dense: Number = 0
    upstream_neuron: str | None = None
    block: str | None = None
    precision: str = "fp32"  # a module computing in integers declares it ("int8", "w4a3"); its MACs are integer


@dataclass(frozen=True)
class StepRecord:
    """Totals of one model call (one diffusion step), per image."""

    index: int
    t: int | None
    totals: dict[str, Number]


@dataclass(frozen=True)
class LayerStepRecord:
    """Counts of one layer in one model call (diffusion step ``step`` at timestep ``t``), per image.

    ``upstream`` splits the layer's dense MACs by the spiking layer that last ran before
    them (:data:`NO_UPSTREAM` when none had); the conventions of :mod:`profiling.conventions`
    need it to charge each op at its own firing rate.
    """

    step: int
    t: int | None
    layer: str
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
    firing_rate: float | None = None
    spikes_per_step: list[Number] = field(default_factory=list)  # per spiking step T
    bytes: Number = 0
    weight_uses: Number = 0
    weight_reads: Number = 0
    bias_uses: Number = 0
    bias_reads: Number = 0
    param_elements: Number = 0
    param_bytes: Number = 0
    state_bytes: Number = 0
    syn_calls: Number = 0
    syn_in: Number = 0
    syn_out: Number = 0
    in_reads: Number = 0
    spike_calls: Number = 0
    spike_events: Number = 0
    spike_fanout: Number = 0
    spike_out: Number = 0
    addr_acc: Number = 0
    addr_kernel: Number = 0
    addr_mac: Number = 0
    input_rated_acs: Number = 0
    input_rated_dense: Number = 0
    upstream: dict[str, Number] = field(default_factory=dict)

    @classmethod
    def of(cls, values: dict[str, Any]) -> LayerStepRecord:
        """The record of ``values``, a dict holding every field exactly: what the generated frozen
        ``__init__`` makes, without its ``object.__setattr__`` per field (~10 us a record; a profiled
        DDIM-50 run of sdit-small builds 3,100).

        Raises:
            TypeError: ``values`` lacks a field or holds a name that is not one.
        """
        if values.keys() != _LAYER_STEP_FIELDS:
            missing, extra = _LAYER_STEP_FIELDS - values.keys(), values.keys() - _LAYER_STEP_FIELDS
            raise TypeError(f"LayerStepRecord.of: missing {sorted(missing)}, unknown {sorted(extra)}")
        record = object.__new__(cls)
        record.__dict__.update(values)
        return record


_LAYER_STEP_FIELDS = frozenset(f.name for f in fields(LayerStepRecord))


@dataclass(frozen=True)
class UnsupportedOp:
    """An op no rule covers: how often it ran and in which layers."""

    op: str
    count: int
    layers: list[str]


def exact_sum(values: list[Number]) -> Number:
    """Sum of ints exactly; with any float, the correctly rounded sum (:func:`math.fsum`), order-free."""
    if all(isinstance(v, int) for v in values):
        return sum(values)
    return math.fsum(values)


@dataclass(frozen=True)
class Profile:
    """Per-layer, per-step and total counts of a workload, per image.

    Attributes:
        model: Preset name or checkpoint the model came from.
        kind: ``sdit`` or ``dit``.
        workload: What ran (:class:`Workload`).
        batch_size: Images per model call while counting (the workload's).
        time_steps: Spiking steps T (0 for an ANN).
        per_image: Column -> total over layers and steps.
        layers: Per-layer records in execution order.
        steps: Per diffusion step totals.
        conventions: What every column means.
        unsupported_ops: Ops no rule covered, with counts and layers.
        layer_steps: Per layer per diffusion step (long format), step-major, layers in execution order.
    """

    model: str
    kind: str
    workload: Workload
    batch_size: int
    time_steps: int
    per_image: dict[str, Number]
    layers: list[LayerRecord]
    steps: list[StepRecord]
    conventions: dict[str, str]
    unsupported_ops: list[dict[str, Any]]
    layer_steps: list[LayerStepRecord] = field(default_factory=list)

    @property
    def num_model_calls(self) -> int:
        return len(self.steps)

    @property
    def is_spiking(self) -> bool:
        """Whether any layer updates spiking neurons."""
        return any(r.neuron_updates for r in self.layers)

    @property
    def mean_firing_rate(self) -> float | None:
        updates = self.per_image.get("neuron_updates", 0)
        return self.per_image["spikes"] / updates if updates else None

    @property
    def in_block_ac_share(self) -> float | None:
        """Strict ACs / (ACs + MACs) over the layers inside spiking blocks; None without blocks or synaptic ops."""
        inside = [r for r in self.layers if r.block is not None]
        acs, macs = sum(r.acs for r in inside), sum(r.macs for r in inside)
        return acs / (acs + macs) if acs + macs else None

    def layer(self, name: str) -> LayerRecord:
        for record in self.layers:
            if record.name == name:
                return record
        raise KeyError(f"no layer named {name!r} in this profile")

    def steps_of(self, index: int) -> list[LayerStepRecord]:
        """The layer records of diffusion step ``index``, in execution order."""
        return [r for r in self.layer_steps if r.step == index]

    # ---- serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = {"schema": PROFILE_SCHEMA, **asdict(self)}
        data["workload"] = self.workload.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        """The inverse of :meth:`to_dict`.

        Raises:
            ValueError: a profile of another schema (an older one names the sdit that reads it), or one
                that lacks keys.
        """
        schema = data.get("schema")
        if schema != PROFILE_SCHEMA:
            reader = OLDER_PROFILE_READERS.get(schema, OLDER_PROFILE_READER)
            raise ValueError(f"a profile of schema {schema!r}, not {PROFILE_SCHEMA!r}: it is read by "
                             f"{reader}; profile the model again")
        required = {f.name for f in fields(cls)}
        missing = required - set(data)
        if missing:
            raise ValueError(f"profile JSON lacks keys: {', '.join(sorted(missing))}")
        values = {k: data[k] for k in required}
        values["workload"] = Workload.from_dict(data["workload"])
        values["layers"] = [LayerRecord(**r) for r in data["layers"]]
        values["steps"] = [StepRecord(**s) for s in data["steps"]]
        values["layer_steps"] = [LayerStepRecord(**r) for r in data["layer_steps"]]
        return cls(**values)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Profile:
        return cls.from_dict(json.loads(text))

    # ---- a short description --------------------------------------------------------
    def __repr__(self) -> str:
        """A few lines: model, workload, size, totals per image (the records themselves: ``to_dict()``)."""
        rate = self.mean_firing_rate
        keys = ("macs", "acs", "dense_macs", "spikes")
        totals = ", ".join(f"{key} {self.per_image.get(key, 0):,.0f}" for key in keys)
        return (f"Profile(model={self.model!r}, kind={self.kind!r}, time_steps={self.time_steps},\n"
                f"        workload={self.workload.label()!r},\n"
                f"        {len(self.layers)} layers, {self.num_model_calls} model calls, "
                f"{len(self.unsupported_ops)} uncounted op kinds,\n"
                f"        per image: {totals}, "
                f"mean firing rate {'n/a (no neurons)' if rate is None else f'{rate:.4f}'})")

    # ---- tables (pandas, imported on use) ---------------------------------------------
    # Every frame: counts per image (summed over the batch / batch size), firing_rate spikes per neuron update
    # (in [0, 1]; above 1 only for a multi-spike neuron), missing values <NA> in nullable dtypes (Float64,
    # Int64, string), never None in an object column, and no list-valued column (per spiking step values:
    # spikes_per_step_frame()). docs/api.md lists them.
    def to_dataframe(self) -> Any:
        """Per-layer table (one row per layer, per image), as a pandas DataFrame; see :meth:`layers_frame`."""
        return self.layers_frame()

    def layers_frame(self) -> Any:
        """One row per layer (index ``layer``, execution order), per image, summed over diffusion steps."""
        import pandas as pd

        columns = [f.name for f in fields(LayerRecord) if f.name not in ("name", "spikes_per_step")]
        frame = pd.DataFrame([{c: getattr(r, c) for c in columns} for r in self.layers], columns=columns,
                             index=pd.Index([r.name for r in self.layers], name="layer"))
        return _typed(frame)

    def steps_frame(self) -> Any:
        """One row per diffusion step (index ``step``): ``t`` and every summed column, per image."""
        import pandas as pd

        rows = [{"step": s.index, "t": s.t, **s.totals} for s in self.steps]
        return _typed(pd.DataFrame(rows, columns=["step", "t", *COLUMNS]).set_index("step"))

    def layer_steps_frame(self) -> Any:
        """Long format: one row per (diffusion step, layer), index (``step``, ``layer``), per image; ``upstream``
        and the per-spiking-step spikes (:meth:`spikes_per_step_frame`) left out."""
        import pandas as pd

        columns = [f.name for f in fields(LayerStepRecord) if f.name not in ("upstream", "spikes_per_step")]
        rows = [{c: getattr(r, c) for c in columns} for r in self.layer_steps]
        return _typed(pd.DataFrame(rows, columns=columns).set_index(["step", "layer"]))

    def spikes_per_step_frame(self) -> Any:
        """Long format: spikes per image of each spiking layer in each spiking step (of T), summed over
        diffusion steps; index (``layer``, ``spiking_step``), column ``spikes``."""
        import pandas as pd

        rows = [(r.name, i, v) for r in self.layers for i, v in enumerate(r.spikes_per_step)]
        frame = pd.DataFrame(rows, columns=["layer", "spiking_step", "spikes"]).set_index(["layer", "spiking_step"])
        return _typed(frame)


def _typed(frame: Any) -> Any:
    """``frame`` with nullable dtypes: float columns (and ``firing_rate``) Float64, ``t`` Int64, text ``string``;
    a missing value is <NA>, never None in an object column."""
    out = frame.copy()
    for column in out.columns:
        values = out[column]
        if column == "firing_rate" or values.dtype.kind == "f":
            out[column] = values.astype("Float64")
        elif column == "t":
            out[column] = values.astype("Int64")
        elif values.dtype == object:
            out[column] = values.astype("string")
    return out
