"""Memory models: named, documented ways to charge data movement, each a pure function of a profile's counts.

A memory model says which bytes move and where they come from (its dataflow); a memory preset says what a
byte costs (its source, process node and evidence grade). ``--memory MODEL[:PRESET]`` picks both
(:func:`resolve_memory`); a bare preset name is the ``operand-once`` model at that preset, as before.
Nothing here imports torch; the counts come from :data:`profiling.records.MEMORY_COLUMNS`.

Models (:data:`MEMORY_MODELS`):

- ``none``: no memory term (compute only).
- ``operand-once``: every operand of a synaptic op (input, weights, output) moved once at its storage
  width, no re-read (the ``bytes`` column): a lower bound on data movement; elementwise ops move nothing.
- ``no-reuse``: every weight and bias read at each use (a weight use per MAC or AC the counting convention
  charges; per output element for a bias) and every neuron's state read and written once per spiking step,
  at storage width; activations are not charged. Under the ``strict`` convention it is spikingjelly's
  ``estimate_simple_energy`` memory term, byte for byte.
- ``lemaire``: Lemaire et al. (ICONIP 2022, arXiv:2210.13107) as spikingjelly's ``estimate_lemaire_energy``
  implements it: 32-bit words read from and written to three buffers (inputs/outputs, parameters,
  membrane potentials), each access priced by the buffer's size on Horowitz's SRAM curve, plus the
  address computations; for Conv/Linear modules and IF/LIF neurons. Buffers are sized per image.
  It follows the measured spikes, so it is the same under every convention and the firing-rate sweep
  holds it fixed. Extended here (not Lemaire's) to activation products and elementwise ops
  (:data:`LEMAIRE_ELEMENTWISE`, :func:`_lemaire_extended`; docs/memory.md states each rule).

- ``dataflow``: an on-chip buffer of the preset's size (``dataflow:45nm-sram-32kb``) at its price, DRAM
  behind it: weights stationary while they fit (one fetch per model call, shared by the T spiking steps),
  activations, membrane potentials and spikes (1 bit) on chip while they fit beside them, the rest spilling
  to DRAM (:func:`dataflow`).

A layer whose memory a model cannot assign is listed in the estimate's ``unassigned`` (layer -> reason),
never counted as 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from profiling.conventions import OpSplit
from profiling.records import LayerStepRecord, Profile

PJ = 1e-12
HOROWITZ_CITATION = (
    "M. Horowitz, 'Computing's energy problem (and what we can do about it)', IEEE International "
    "Solid-State Circuits Conference, ISSCC 2014, pp. 10-14, doi:10.1109/ISSCC.2014.6757323"
)
LEMAIRE_CITATION = (
    "E. Lemaire et al., 'An Analytical Estimation of Spiking Neural Networks Energy Efficiency', ICONIP 2022, "
    "arXiv:2210.13107, doi:10.1007/978-3-031-30105-6_48"
)
WORD_BYTES = 4  # Lemaire et al.: 32-bit words everywhere
FIFO_WORDS = 1000  # Lemaire et al.'s spike FIFO, in words (its experiments; spikingjelly's default)


class MemoryModelError(ValueError):
    """An unknown memory model or preset, or a preset that does not fit the model."""


@dataclass(frozen=True)
class MemoryPreset:
    """What a byte of memory traffic costs, with where the figure comes from.

    Attributes:
        name: Preset name.
        source: Citation.
        process: Process node (``None``: not stated by the source).
        evidence: ``circuit estimate``, ``not stated``, ...
        pj_per_byte: One price for every access (per-byte models), pJ per byte; ``None`` for a size curve.
        curve: ``(buffer bytes, pJ per byte)`` points, linear between them, clamped at both ends: the price of
            an access by the size of the buffer it hits (Lemaire's model); ``None`` for a single price.
        add_pj: Address addition, pJ (Lemaire's addressing); ``mul_pj``: address multiplication, pJ.
        buffer_bytes: The size of the on-chip buffer the price is for (the ``dataflow`` model's buffer);
            ``None``: not an on-chip buffer.
    """

    name: str
    source: str
    process: str | None
    evidence: str
    pj_per_byte: float | None = None
    curve: tuple[tuple[float, float], ...] | None = None
    add_pj: float | None = None
    mul_pj: float | None = None
    buffer_bytes: float | None = None

    def price(self, buffer_bytes: float = 0.0) -> float:
        """pJ per byte of an access to a buffer of ``buffer_bytes`` (the single price where there is one)."""
        if self.curve is None:
            assert self.pj_per_byte is not None
            return self.pj_per_byte
        points = self.curve
        size = max(points[0][0], min(buffer_bytes, points[-1][0]))
        for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
            if size <= x1:
                return y0 + (y1 - y0) / (x1 - x0) * (size - x0)
        return points[-1][1]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _horowitz(name: str, what: str, pj_64bit: float, note: str = "", size: float | None = None) -> MemoryPreset:
    return MemoryPreset(name, f"{HOROWITZ_CITATION}: {what}, 64-bit read {note or f'{pj_64bit:g} pJ'}; "
                              "per byte = the 64-bit figure / 8", "45 nm", "circuit estimate", pj_64bit / 8,
                        buffer_bytes=size)


MEMORY_PRESETS: dict[str, MemoryPreset] = {
    "45nm-sram-8kb": _horowitz("45nm-sram-8kb", "8 KB SRAM", 10, size=8192),
    "45nm-sram-32kb": _horowitz("45nm-sram-32kb", "32 KB SRAM", 20, size=32768),
    "45nm-sram-1mb": _horowitz("45nm-sram-1mb", "1 MB SRAM", 100, size=1048576),
    "45nm-dram": _horowitz("45nm-dram", "DRAM", 1300, "1.3-2.6 nJ (the low end, 1.3 nJ)"),
    "step-3.12pj-bit": MemoryPreset(
        "step-3.12pj-bit", "3.12 pJ per bit (24.96 pJ per byte), the memory price spikingjelly 2.0's "
        "estimate_simple_energy takes from STEP (openreview.net/pdf?id=SzwU2XrXIS); the underlying "
        "measurement is not stated there", None, "not stated", 3.12 * 8),
    "45nm-sram-lemaire": MemoryPreset(
        "45nm-sram-lemaire", f"{LEMAIRE_CITATION}, pricing a 32-bit access by buffer size on {HOROWITZ_CITATION}'s "
        "SRAM figures (8 KB 10 pJ, 32 KB 20 pJ, 1 MB 100 pJ) read per 32-bit word, 0 at 0 bytes, linear between, "
        "clamped above 1 MB; addressing at 32-bit integer add 0.1 pJ and multiply 3.1 pJ",
        "45 nm", "circuit estimate",
        curve=((0.0, 0.0), (8192.0, 10 / WORD_BYTES), (32768.0, 20 / WORD_BYTES), (1048576.0, 100 / WORD_BYTES)),
        add_pj=0.1, mul_pj=3.1),
}


@dataclass(frozen=True)
class Memory:
    """A memory model at a preset (``preset`` ``None`` for ``none``)."""

    model: str
    preset: MemoryPreset | None

    @property
    def spec(self) -> str:
        return self.model if self.preset is None else f"{self.model}:{self.preset.name}"


@dataclass
class MemoryResult:
    """What a memory model charges one profile under one convention, per image.

    Attributes:
        cells: (diffusion step, layer) -> (bytes moved, joules, joules per AC the firing-rate sweep moves).
        unassigned: Layer -> why the model cannot assign its memory.
        breakdown: Component -> joules per image (e.g. ``weights``, ``states``, ``addressing``).
        byte_counts: Component -> bytes per image.
    """

    cells: dict[tuple[int, str], tuple[float, float, float]]
    unassigned: dict[str, str]
    breakdown: dict[str, float]
    byte_counts: dict[str, float]


ModelRule = Callable[[Profile, MemoryPreset, list[dict[str, OpSplit]]], MemoryResult]


@dataclass(frozen=True)
class MemoryModel:
    """A named memory model: its one-line summary, its dataflow, its default preset and its rule."""

    name: str
    summary: str
    default_preset: str | None
    rule: ModelRule | None


_ELEMENTWISE = ("norm", "softmax", "exp", "adds", "muls", "other")


def _records(profile: Profile) -> list[LayerStepRecord]:
    return profile.layer_steps


def _add(acc: dict[str, float], key: str, value: float) -> None:
    acc[key] = acc.get(key, 0.0) + value


def operand_once(profile: Profile, preset: MemoryPreset, splits: list[dict[str, OpSplit]]) -> MemoryResult:
    """Every synaptic operand moved once (the ``bytes`` column) at the preset's price."""
    price = preset.price()
    cells, unassigned, nbytes = {}, {}, 0.0
    for r in _records(profile):
        cells[(r.step, r.layer)] = (r.bytes, r.bytes * price * PJ, 0.0)
        nbytes += r.bytes
        if not r.bytes and any(getattr(r, c) for c in _ELEMENTWISE):
            unassigned[r.layer] = "elementwise ops (norm, softmax, activations, adds): operand-once moves the " \
                                  "operands of synaptic ops only"
    return MemoryResult(cells, unassigned, {"operands": nbytes * price * PJ}, {"operands": nbytes})


def no_reuse(profile: Profile, preset: MemoryPreset, splits: list[dict[str, OpSplit]]) -> MemoryResult:
    """Weights at each use (the convention's MACs + ACs of a synaptic module), biases per output, states read
    and written each spiking step, at the preset's price."""
    price = preset.price() * PJ
    by_step = {s.index: split for s, split in zip(profile.steps, splits, strict=True)}
    cells, unassigned = {}, {}
    weights = biases = states = 0.0
    for r in _records(profile):
        w = 0.0
        per_ac = 0.0
        if r.weight_uses:
            width = r.weight_reads / r.weight_uses  # storage bytes of one weight
            split = by_step[r.step].get(r.layer)
            uses = (split.macs + split.acs) if split is not None else r.weight_uses
            w = width * uses
            per_ac = width * price
        elif r.dense_macs:
            unassigned[r.layer] = "synaptic op on activations (no module weights, e.g. an attention product): " \
                                  "no-reuse charges parameter and neuron-state traffic only"
        if r.neuron_updates and not r.state_bytes:
            unassigned[r.layer] = "neuron layer without state tensors (spikingjelly memories()): its state " \
                                  "traffic is unknown"
        s = 2 * r.state_bytes
        total = w + r.bias_reads + s
        weights, biases, states = weights + w, biases + r.bias_reads, states + s
        cells[(r.step, r.layer)] = (total, total * price, per_ac)
    return MemoryResult(cells, unassigned,
                        {"weights": weights * price, "biases": biases * price, "states": states * price},
                        {"weights": weights, "biases": biases, "states": states})


def lemaire(profile: Profile, preset: MemoryPreset, splits: list[dict[str, OpSplit]]) -> MemoryResult:
    """Lemaire et al.'s buffers and addressing (see the module docstring), per layer and model call."""
    if preset.curve is None or preset.add_pj is None or preset.mul_pj is None:
        raise MemoryModelError(f"the lemaire model prices accesses by buffer size: preset {preset.name!r} has no "
                           "size curve and addressing costs (use 45nm-sram-lemaire)")
    w, batch = WORD_BYTES, profile.batch_size
    fifo = FIFO_WORDS * w
    layers = {r.name: r for r in profile.layers}
    spiking = profile.is_spiking
    cells, unassigned = {}, {}
    energy = {"inout": 0.0, "params": 0.0, "potential": 0.0, "addressing": 0.0}
    nbytes = {"read_in": 0.0, "write_out": 0.0, "read_params": 0.0, "read_potential": 0.0, "write_potential": 0.0}

    def access(component: str, kind: str, n_bytes: float, buffer: float, acc: list[float]) -> None:
        joules = n_bytes * preset.price(buffer) * PJ
        energy[component] += joules
        nbytes[kind] += n_bytes
        acc[0] += n_bytes
        acc[1] += joules

    for r in _records(profile):
        acc = [0.0, 0.0]
        if r.syn_calls:
            dense_calls = r.syn_calls - r.spike_calls
            if dense_calls and r.spike_calls:
                unassigned[r.layer] = "a synaptic module fed spikes in some calls and real values in others"
            else:
                if dense_calls:
                    access("inout", "read_in", (r.in_reads - r.spike_events) * w, r.syn_in * w / dense_calls / batch,
                           acc)
                    if not spiking:
                        access("inout", "write_out", r.syn_out * w, r.syn_out * w / dense_calls / batch, acc)
                    uses = r.weight_uses
                else:
                    access("inout", "read_in", r.spike_events * w, fifo, acc)
                    potential = r.spike_out * w / r.spike_calls / batch
                    access("potential", "read_potential", r.spike_fanout * w, potential, acc)
                    access("potential", "write_potential", r.spike_fanout * w, potential, acc)
                    uses = r.spike_fanout
                params = r.param_elements * w / r.syn_calls  # the module's own parameters, one call's worth
                access("params", "read_params", (uses + r.bias_uses) * w, params, acc)
                adds, muls = r.addr_acc + r.addr_kernel, r.addr_mac  # a multiply-add per address multiply
                addressing = (adds * preset.add_pj + muls * (preset.mul_pj + preset.add_pj)) * PJ
                energy["addressing"] += addressing
                acc[1] += addressing
        elif r.neuron_updates:
            steps = len(r.spikes_per_step) or 1
            potential = r.neuron_updates / steps * w
            access("potential", "read_potential", r.neuron_updates * w, potential, acc)
            access("potential", "write_potential", r.neuron_updates * w, potential, acc)
            access("inout", "write_out", r.spikes * w, fifo, acc)
            if layers[r.layer].kind not in ("LIFNode", "IFNode"):
                unassigned.setdefault(r.layer, f"{layers[r.layer].kind}: charged as a LIF (Lemaire et al. model "
                                               "IF and LIF neurons only)")
        else:
            _lemaire_extended(r, access, acc)
        cells[(r.step, r.layer)] = (acc[0], acc[1], 0.0)
    return MemoryResult(cells, unassigned, energy, nbytes)


# Our extension of Lemaire et al. to the ops outside their model (docs/memory.md): 32-bit words read and written
# per counted output element of each elementwise column, no fusion (each op reads its operands from the
# input/output buffer and writes its result there).
LEMAIRE_ELEMENTWISE: dict[str, tuple[int, int]] = {
    "norm": (2, 1),  # LayerNorm / GroupNorm: one pass for the statistics, one to normalise; write the result
    "softmax": (2, 1),  # one pass for max and sum, one to normalise; write the result
    "exp": (1, 1),  # unary transcendentals (exp, SiLU, GELU, sigmoid, tanh, ...; 4 per WKV element)
    "adds": (2, 1),  # binary adds / subs, reductions (a running sum), bias adds
    "muls": (2, 1),  # binary muls / divs
    "other": (2, 1),  # comparisons, max, where, ReLU (a unary one read as binary: one word too many)
}


def _lemaire_extended(r: LayerStepRecord, access: Callable[..., None], acc: list[float]) -> None:
    """Our extension of Lemaire et al.'s model to a record outside it (no synaptic module, no neuron):
    activation products and elementwise ops, each in 32-bit words through the input/output buffer."""
    w = WORD_BYTES
    if r.dense_macs:
        # an activation product (q k^T, attn v): a MAC reads both operands at each use, as Lemaire's dense Conv
        # reads an input word and a weight word per use; an AC (a spike operand) reads the real operand and
        # reads and writes the running sum, as Lemaire's event-driven synapse does its potential. Buffer: the
        # product's operands and output once (the ``bytes`` column of the model call).
        buffer = max(r.bytes, 1)
        access("inout", "read_in", 2 * r.macs * w, buffer, acc)
        if r.acs:
            access("inout", "read_in", r.acs * w, buffer, acc)
            access("potential", "read_potential", r.acs * w, buffer, acc)
            access("potential", "write_potential", r.acs * w, buffer, acc)
    elements = [(getattr(r, c), LEMAIRE_ELEMENTWISE[c]) for c in _ELEMENTWISE]
    total = sum(n for n, _ in elements)
    for n, (reads, writes) in elements:
        if n:
            # buffer: the layer's elementwise results of the model call, in words
            access("inout", "read_in", reads * n * w, total * w, acc)
            access("inout", "write_out", writes * n * w, total * w, acc)


DRAM_PRESET = "45nm-dram"  # where the dataflow model's spills and weight fetches go


def _share(nbytes: float, on_chip: float) -> float:
    """The fraction of ``nbytes`` that ``on_chip`` bytes of buffer hold (1 when it all fits)."""
    return 1.0 if nbytes <= on_chip else max(on_chip, 0.0) / nbytes


def dataflow(profile: Profile, preset: MemoryPreset, splits: list[dict[str, OpSplit]]) -> MemoryResult:
    """An on-chip buffer of ``preset.buffer_bytes`` at the preset's price, DRAM (:data:`DRAM_PRESET`) behind it,
    layer by layer in each model call (docs/memory.md states every rule and what the model cannot know)."""
    if preset.buffer_bytes is None:
        raise MemoryModelError(f"the dataflow model needs an on-chip buffer size: preset {preset.name!r} has none "
                               "(use 45nm-sram-8kb, 45nm-sram-32kb or 45nm-sram-1mb)")
    size, sram, dram = preset.buffer_bytes, preset.price() * PJ, MEMORY_PRESETS[DRAM_PRESET].price() * PJ
    by_step = {s.index: split for s, split in zip(profile.steps, splits, strict=True)}
    synaptic = [r for r in profile.layers if r.param_elements]
    width = (sum(r.param_bytes for r in synaptic) / sum(r.param_elements for r in synaptic)) if synaptic else 4.0
    cells, unassigned = {}, {}
    energy = {"weight_fetch": 0.0, "weights": 0.0, "activations": 0.0, "states": 0.0, "spikes": 0.0}
    nbytes = {"dram": 0.0, "sram": 0.0, **{k: 0.0 for k in energy}}

    def move(component: str, n_bytes: float, on_chip: float, acc: list[float]) -> None:
        joules = n_bytes * (on_chip * sram + (1.0 - on_chip) * dram)
        energy[component] += joules
        nbytes[component] += n_bytes
        nbytes["sram"] += n_bytes * on_chip
        nbytes["dram"] += n_bytes * (1.0 - on_chip)
        acc[0] += n_bytes
        acc[1] += joules

    for r in _records(profile):
        acc = [0.0, 0.0]
        per_ac = 0.0
        resident = 0.0
        if r.syn_calls:
            one_call = r.param_bytes / r.syn_calls  # the module's weights and bias
            kept = _share(one_call, size)
            resident = min(one_call, size)
            move("weight_fetch", resident, 0.0, acc)  # one fetch per model call, shared by its T spiking steps
            per_use = r.weight_reads / r.weight_uses if r.weight_uses else 0.0
            split = by_step[r.step].get(r.layer)
            uses = (split.macs + split.acs) if split is not None else r.weight_uses
            move("weights", per_use * uses + r.bias_reads, kept, acc)
            per_ac = per_use * (kept * sram + (1.0 - kept) * dram)
        if r.neuron_updates and not r.state_bytes:
            unassigned[r.layer] = "neuron layer without state tensors (spikingjelly memories()): its state " \
                                  "traffic is unknown"
        # real-valued results, each written once and read once by the next layer, at storage width: a synaptic
        # module's output, an elementwise op's results; an activation product its operands and output once
        activations = 2 * (r.syn_out + r.spike_out) * width
        if not r.syn_calls:
            activations += r.bytes + 2 * sum(getattr(r, c) for c in _ELEMENTWISE) * width
        states = 2 * r.state_bytes
        spikes = 2 * r.neuron_updates / 8  # written as 1 bit per neuron and step, read once by the next layer
        on_chip = _share(activations + states + spikes, size - resident)
        move("activations", activations, on_chip, acc)
        move("states", states, on_chip, acc)
        move("spikes", spikes, on_chip, acc)
        cells[(r.step, r.layer)] = (acc[0], acc[1], per_ac)
    return MemoryResult(cells, unassigned, energy, nbytes)


MEMORY_MODELS: dict[str, MemoryModel] = {
    "none": MemoryModel("none", "no memory term: compute only", None, None),
    "operand-once": MemoryModel(
        "operand-once", "every operand of a synaptic op (input, weights, output) moved once at storage width, "
                        "elementwise ops nothing: a lower bound", "45nm-sram-8kb", operand_once),
    "no-reuse": MemoryModel(
        "no-reuse", "every weight and bias read at each use, every neuron state read and written each spiking "
                    "step, at storage width; activations free (spikingjelly's estimate_simple_energy)",
        "step-3.12pj-bit", no_reuse),
    "lemaire": MemoryModel(
        "lemaire", "Lemaire et al. 2022: 32-bit words through input/output, parameter and potential buffers "
                   "priced by buffer size, plus addressing (spikingjelly's estimate_lemaire_energy on Conv/Linear "
                   "and IF/LIF); extended to activation products and elementwise ops, no fusion",
        "45nm-sram-lemaire", lemaire),
    "dataflow": MemoryModel(
        "dataflow", "an on-chip buffer of the preset's size (SRAM price) before DRAM: a layer's weights stationary "
                    "while they fit, fetched once per model call for its T spiking steps; activations, membrane "
                    "potentials and 1-bit spikes on chip while they fit beside them, the rest at DRAM price",
        "45nm-sram-32kb", dataflow),
}
DEFAULT_MEMORY = "45nm-sram-8kb"  # 'default': the operand-once model at the cheapest on-chip read


def resolve_memory(spec: str | None) -> Memory:
    """``MODEL``, ``MODEL:PRESET``, a bare preset (``operand-once`` at it), ``default`` or ``None`` (``none``).

    Raises:
        MemoryModelError: an unknown model or preset.
    """
    if spec is None or spec == "none":
        return Memory("none", None)
    if spec == "default":
        spec = DEFAULT_MEMORY
    model, _, preset = spec.partition(":")
    if not preset and model in MEMORY_PRESETS:
        model, preset = "operand-once", model
    if model not in MEMORY_MODELS:
        raise MemoryModelError(f"unknown memory preset {spec!r} (nor a memory model); "
                               f"models: {', '.join(MEMORY_MODELS)}; "
                           f"presets: {', '.join(MEMORY_PRESETS)} (MODEL:PRESET picks both)")
    if model == "none":
        if preset:
            raise MemoryModelError("the none memory model takes no preset")
        return Memory("none", None)
    name = preset or MEMORY_MODELS[model].default_preset
    if name not in MEMORY_PRESETS:
        raise MemoryModelError(f"unknown memory preset {name!r}; known: {', '.join(MEMORY_PRESETS)}")
    chosen = MEMORY_PRESETS[name]
    if model == "dataflow" and chosen.buffer_bytes is None:
        raise MemoryModelError(f"memory model 'dataflow' does not take preset {name!r}: it needs an on-chip buffer "
                               "size (45nm-sram-8kb, 45nm-sram-32kb or 45nm-sram-1mb)")
    if (chosen.curve is not None) != (model == "lemaire"):
        raise MemoryModelError(f"memory model {model!r} does not take preset {name!r}: the lemaire model prices by "
                           "buffer size (45nm-sram-lemaire), the others by one price per byte")
    return Memory(model, chosen)


def charge(profile: Profile, memory: Memory, splits: list[dict[str, OpSplit]]) -> MemoryResult | None:
    """What ``memory`` charges ``profile`` under the convention whose per-call splits are ``splits``
    (``None`` for the ``none`` model)."""
    model = MEMORY_MODELS[memory.model]
    if model.rule is None or memory.preset is None:
        return None
    return model.rule(profile, memory.preset, splits)
