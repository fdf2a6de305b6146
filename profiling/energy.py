"""Estimated energy: op counts of a :class:`Profile` times cited energy constants, under a named convention.

Pure functions, torch-free. Compute energy is ``E = e_mac * MACs + e_ac * ACs`` (docs/conventions.md),
where a counting convention (:mod:`profiling.conventions`) says which synaptic ops are MACs and
which ACs. A neuron-update term (membrane updates x pJ) counts where the preset defines it; a
memory term only when asked: a memory model at a memory preset (:mod:`profiling.memory`,
docs/memory.md; off by default). Each term stays in its own column, never folded into compute.

Cost presets carry their evidence: per-term values with units, their scope (``per-op`` terms
that add up, or an ``all-in`` figure to which nothing may be added), an evidence grade, the
process node, the full citation and what we checked of it. A term a preset does not define is
reported as "not defined by <preset>" (value ``None``), never as 0.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from profiling.conventions import split_steps
from profiling.memory import (
    DEFAULT_MEMORY,
    MEMORY_MODELS,
    MEMORY_PRESETS,
    Memory,
    MemoryModelError,
    MemoryPreset,
    charge,
    resolve_memory,
)
from profiling.records import Profile

__all__ = ["CHEAPER_AT_FULL_RATE", "DEARER_WHEN_SILENT", "DEFAULT_MEMORY", "MEMORY_MODELS", "MEMORY_PRESETS",
           "CostsError", "EnergyCosts", "Estimate", "NO_RATE_DEPENDENCE", "break_even", "break_even_rate",
           "estimate", "load_costs", "memory_of", "with_memory", "with_overrides"]

PJ = 1e-12  # joules per picojoule
# break_even's reasons where there is no break-even rate
DEARER_WHEN_SILENT = "none: dearer than the baseline even when silent"
CHEAPER_AT_FULL_RATE = "none: cheaper than the baseline even at 100 % firing"
NO_RATE_DEPENDENCE = "the energy does not depend on the firing rate under this convention"
HOROWITZ_2014 = (
    "M. Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014, "
    "45 nm: MAC = mult + add"
)
# Horowitz's 45 nm int8 mult 0.2 pJ + add 0.03 pJ: the integer MAC of the 45 nm presets, whatever their float
# width, so a quantized layer costs the same beside fp32 and fp16 layers. Products of fewer bits are priced as int8
# (they run on 8-bit multipliers here; an upper bound for dedicated narrower hardware).
INT8_MAC_45NM_PJ = 0.23
SCOPES = ("per-op", "all-in")
EVIDENCE_GRADES = ("circuit estimate", "pre-silicon simulation", "measured on silicon", "not stated")
# term -> (field of EnergyCosts, unit)
TERMS: dict[str, tuple[str, str]] = {
    "mac": ("e_mac_pj", "pJ per MAC"),
    "ac": ("e_ac_pj", "pJ per AC (synaptic op driven by a spike)"),
    "neuron": ("e_neuron_update_pj", "pJ per neuron (membrane) update"),
    "memory": ("e_mem_pj_per_byte", "pJ per byte moved"),
}


class CostsError(ValueError):
    """Energy constants that are missing, negative or malformed, or a term added to an all-in figure."""


@dataclass(frozen=True)
class EnergyCosts:
    """Energy per operation, with where the numbers come from.

    Attributes:
        name: Preset name or file the constants came from.
        e_mac_pj: Energy of one multiply-accumulate, pJ; ``None``: not defined by this preset.
        e_ac_pj: Energy of one accumulate (synaptic op driven by a spike), pJ; ``None``: not defined.
        source: Citation or provenance of the constants.
        e_mem_pj_per_byte: Memory price, pJ per byte: of the ``memory`` model's bytes, or with no ``memory``
            of operand bytes moved once (the ``operand-once`` model); ``None``: off or priced by buffer size.
        e_neuron_update_pj: Neuron term, pJ per membrane update; ``None``: not defined.
        scope: ``per-op`` (terms that add up) or ``all-in`` (one figure that already includes
            neuron updates, memory and routing: nothing may be added to it).
        evidence: ``circuit estimate``, ``pre-silicon simulation``, ``measured on silicon`` or ``not stated``.
        process: Process node, e.g. ``45 nm``.
        checked: What we checked of the figures against the cited source, and how.
        memory: The memory model and preset, ``MODEL:PRESET`` (:mod:`profiling.memory`); ``None``: see
            ``e_mem_pj_per_byte``.
        e_int_mac_pj: Energy of one integer MAC (8 bits or fewer), pJ, for the layers that compute in integers
            (``LayerRecord.precision``); ``None``: not defined, such MACs are priced at ``e_mac_pj`` and the
            estimate says so.
    """

    name: str
    e_mac_pj: float | None
    e_ac_pj: float | None
    source: str
    e_mem_pj_per_byte: float | None = None
    e_neuron_update_pj: float | None = None
    scope: str = "per-op"
    evidence: str = "not stated"
    process: str | None = None
    checked: str = ""
    memory: str | None = None
    e_int_mac_pj: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("e_") and value is not None and (
                    not isinstance(value, int | float) or not math.isfinite(value) or value < 0):
                raise CostsError(f"{f.name} must be a finite number >= 0, got {value!r}")
        if self.scope not in SCOPES:
            raise CostsError(f"scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")
        if self.evidence not in EVIDENCE_GRADES:
            raise CostsError(f"evidence must be one of {', '.join(EVIDENCE_GRADES)}, got {self.evidence!r}")
        if self.scope == "all-in":
            added = [k for k in ("e_mem_pj_per_byte", "e_neuron_update_pj", "memory") if getattr(self, k) is not None]
            if added:
                raise CostsError(f"{self.name} is an all-in figure (it already includes neuron updates, memory "
                                 f"and routing): no term may be added to it ({', '.join(added)})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnergyCosts:
        return cls(**data)

    def undefined(self, term: str) -> str:
        """``not defined by <name>``: how an undefined term reads."""
        return f"not defined by {self.name}"

    def terms(self) -> dict[str, str]:
        """Term -> its value with unit, or ``not defined by <name>`` (memory: ``off``)."""
        out = {}
        memory = memory_of(self)
        for term, (attr, unit) in TERMS.items():
            value = getattr(self, attr)
            if term == "memory" and memory.preset is not None:
                price = f"{value:g} {unit}" if value is not None else "pJ per byte by buffer size"
                out[term] = f"{memory.model} model, {price} ({memory.preset.name})"
            elif value is not None:
                out[term] = f"{value:g} {unit}"
            elif term == "memory":
                out[term] = "off (pass a memory preset to add it)"
            else:
                out[term] = self.undefined(term)
        return out


_NEUROMORPHIC_CHECK = (
    "the paper's title, venue, year and authors were checked; its table of figures was not re-read, "
    "so the figures are as the citation gives them"
)

COST_PRESETS: dict[str, EnergyCosts] = {
    "45nm-fp32": EnergyCosts("45nm-fp32", 4.6, 0.9, HOROWITZ_2014 + "; fp32 mult 3.7 pJ, add 0.9 pJ",
                             evidence="circuit estimate", process="45 nm",
                             checked="Horowitz's table of 45 nm op energies: fp32 mult 3.7 pJ + add 0.9 pJ",
                             e_int_mac_pj=INT8_MAC_45NM_PJ),
    "45nm-fp16": EnergyCosts("45nm-fp16", 1.5, 0.4, HOROWITZ_2014 + "; fp16 mult 1.1 pJ, add 0.4 pJ",
                             evidence="circuit estimate", process="45 nm",
                             checked="Horowitz's table of 45 nm op energies: fp16 mult 1.1 pJ + add 0.4 pJ",
                             e_int_mac_pj=INT8_MAC_45NM_PJ),
    "45nm-int8": EnergyCosts("45nm-int8", 0.23, 0.03, HOROWITZ_2014 + "; int8 mult 0.2 pJ, add 0.03 pJ",
                             evidence="circuit estimate", process="45 nm",
                             checked="Horowitz's table of 45 nm op energies: int8 mult 0.2 pJ + add 0.03 pJ",
                             e_int_mac_pj=INT8_MAC_45NM_PJ),
    "loihi": EnergyCosts(
        "loihi", None, 23.6,
        "M. Davies et al., 'Loihi: A Neuromorphic Manycore Processor with On-Chip Learning', IEEE Micro "
        "38(1):82-99, 2018, Table 2: 23.6 pJ per synaptic spike op, 81 pJ per neuron update (minimum "
        "energies from pre-silicon simulation, 14 nm, nominal 0.75 V); no MAC figure (Loihi has no MAC unit)",
        e_neuron_update_pj=81.0, evidence="pre-silicon simulation", process="14 nm FinFET",
        checked=_NEUROMORPHIC_CHECK + "; the IEEE Micro 38(1) 2018 article's title, authors and 14 nm process "
                "were confirmed on its first page"),
    "truenorth": EnergyCosts(
        "truenorth", None, 26.0,
        "P. A. Merolla et al., 'A million spiking-neuron integrated circuit with a scalable communication "
        "network and interface', Science 345(6197):668-673, 2014: 26 pJ per synaptic event, measured on the "
        "chip (28 nm), an all-in figure (neuron updates, memory and routing included)",
        scope="all-in", evidence="measured on silicon", process="28 nm",
        checked=_NEUROMORPHIC_CHECK + "; the Science 345(6197) 2014 supplementary materials (DOI "
                "10.1126/science.1254642) were checked"),
    "spinnaker2": EnergyCosts(
        "spinnaker2", None, 450.0,
        "S. Hoppner et al., 'Dynamic Power Management for Neuromorphic Many-Core Systems', IEEE TCAS-I "
        "66(8):2973-2986, 2019 (arXiv:1903.08941): 450 pJ per synaptic op, 2.19 nJ per neuron update "
        "(28 nm SpiNNaker 2 prototype, per processing element)",
        e_neuron_update_pj=2190.0, evidence="measured on silicon", process="28 nm SLP",
        checked=_NEUROMORPHIC_CHECK + "; the abstract (28 nm test chip, DVFS, measured benchmarks, 50 % less "
                "energy per neuron and synapse computation) was read"),
}
DEFAULT_COSTS = "45nm-fp32"


def memory_of(costs: EnergyCosts) -> Memory:
    """The memory model and preset of ``costs``: its ``memory`` spec, else ``operand-once`` at its
    ``e_mem_pj_per_byte`` (a price set by hand), else ``none``; a set price overrides the preset's."""
    if costs.memory is None:
        if costs.e_mem_pj_per_byte is None:
            return Memory("none", None)
        return Memory("operand-once", MemoryPreset(f"{costs.e_mem_pj_per_byte:g} pJ/byte", costs.source, costs.process,
                                                   costs.evidence, costs.e_mem_pj_per_byte))
    memory = resolve_memory(costs.memory)
    if memory.preset is not None and costs.e_mem_pj_per_byte not in (None, memory.preset.pj_per_byte):
        from dataclasses import replace

        return Memory(memory.model, replace(memory.preset, name=f"{memory.preset.name} (overridden)",
                                            pj_per_byte=costs.e_mem_pj_per_byte))
    return memory


def with_memory(costs: EnergyCosts, memory: str | None) -> EnergyCosts:
    """``costs`` with memory model and preset ``memory`` (``MODEL[:PRESET]``, a bare preset for the
    ``operand-once`` model, ``default``; ``None``: unchanged, the term stays off; ``none``: off).

    Raises:
        CostsError: unknown model or preset, or ``costs`` is all-in.
    """
    if memory is None:
        return costs
    try:
        resolved = resolve_memory(memory)
    except MemoryModelError as err:
        raise CostsError(str(err)) from None
    base = costs.name.split(" + ")[0]
    if resolved.preset is None:
        return EnergyCosts(**{**costs.to_dict(), "name": base, "memory": None, "e_mem_pj_per_byte": None})
    if costs.scope == "all-in":
        raise CostsError(f"{costs.name} is an all-in figure: no memory term may be added to it")
    merged = {**costs.to_dict(), "e_mem_pj_per_byte": resolved.preset.pj_per_byte, "memory": resolved.spec,
              "name": f"{base} + {resolved.spec}",
              "source": f"{costs.source.split('; memory: ')[0]}; memory: {resolved.preset.source}"}
    return EnergyCosts(**merged)


def load_costs(spec: str) -> EnergyCosts:
    """A preset name from :data:`COST_PRESETS`, or a TOML file with the fields of :class:`EnergyCosts`.

    A file needs ``e_mac_pj``, ``e_ac_pj`` and ``source``; ``name`` defaults to the path.

    Raises:
        CostsError: unknown preset, unreadable file, missing or unknown keys, bad values.
    """
    if spec in COST_PRESETS:
        return COST_PRESETS[spec]
    path = Path(spec)
    if not path.is_file():
        raise CostsError(f"--costs {spec!r} is neither a preset ({', '.join(COST_PRESETS)}) nor a TOML file")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise CostsError(f"cannot read energy constants from {path}: {err}") from None
    known = {f.name for f in fields(EnergyCosts)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise CostsError(f"{path}: unknown keys {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    missing = [k for k in ("e_mac_pj", "e_ac_pj", "source") if k not in data]
    if missing:
        raise CostsError(f"{path}: missing {', '.join(missing)}")
    data.setdefault("name", str(path))
    try:
        return EnergyCosts(**data)
    except TypeError as err:
        raise CostsError(f"{path}: {err}") from None


def with_overrides(costs: EnergyCosts, **values: float | None) -> EnergyCosts:
    """``costs`` with the given constants replaced (``None`` keeps the old value); marks the source."""
    changed = {k: v for k, v in values.items() if v is not None}
    if not changed:
        return costs
    note = ", ".join(f"{k}={v}" for k, v in changed.items())
    merged = {**costs.to_dict(), **changed, "name": f"{costs.name} (overridden)",
              "source": f"{costs.source}; overridden by the user: {note}"}
    return EnergyCosts(**merged)


# Firing rates of every firing-rate sweep: fine where break-even rates of trained models lie, then to 1.
SWEEP_RATES = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
# Columns of an estimate under one convention.
TERM_COLUMNS = ("mac_j", "ac_j", "compute_j", "neuron_j", "memory_j", "total_j")


def _term_j(pj: float | None, count: float) -> float | None:
    return None if pj is None else pj * count * PJ


def _add(*values: float | None) -> float | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


# ---- under a named convention --------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """Energy of one profile under one cost preset and one counting convention, joules per image.

    Columns (:data:`TERM_COLUMNS`): ``mac_j``, ``ac_j``, ``compute_j`` (their sum), ``neuron_j``,
    ``memory_j`` and ``total_j``. A term the preset does not define is ``None`` and named in
    ``undefined`` ("not defined by <preset>"); ``total_j`` adds the terms that are defined
    (``included``) and is ``None`` when a MAC or AC term it needs (non-zero count) is undefined.

    Attributes:
        convention: Name of the counting convention.
        costs: The constants used.
        per_image: Column -> joules per image over the workload.
        per_step: Per model call, column -> joules per image.
        layers: Layer -> column -> joules per image over the workload.
        counts: Per image over the workload: ``macs`` and ``acs`` as the convention charges them,
            ``convertible`` (dense MACs charged at a firing rate), ``neuron_updates``, ``bytes``.
        layer_counts: Layer -> ``macs`` and ``acs`` as the convention charges them, per image over the workload.
        undefined: Term -> ``not defined by <preset>`` for each term the preset leaves undefined.
        included: Terms that ``total_j`` adds.
        memory: The memory model and preset (``MODEL:PRESET``; ``none``).
        unassigned: Layer -> why the memory model cannot assign its memory (never counted as 0 silently).
        memory_parts: Component -> joules per image (and ``<component>_bytes``), as the memory model splits it.
    """

    convention: str
    costs: EnergyCosts
    per_image: dict[str, float | None]
    per_step: list[dict[str, float | None]]
    layers: dict[str, dict[str, float | None]]
    counts: dict[str, float]
    undefined: dict[str, str]
    included: list[str]
    layer_counts: dict[str, dict[str, float]]
    memory: str = "none"
    unassigned: dict[str, str] = field(default_factory=dict)
    memory_parts: dict[str, float] = field(default_factory=dict)

    @property
    def total_j(self) -> float | None:
        return self.per_image["total_j"]

    def frame(self) -> Any:
        """One row per layer (index ``layer``): energy per image in microjoules by term (``mac_uj``, ``ac_uj``,
        ``compute_uj``, ``neuron_uj``, ``memory_uj``, ``total_uj``; Float64, <NA> where the preset leaves a term
        undefined) and ``macs`` / ``acs`` as this convention charges them. ``attrs`` name the convention, the
        preset, the memory model and the unit (docs/api.md)."""
        import pandas as pd

        names = list(self.layers)
        data = {column.removesuffix("_j") + "_uj": pd.array(
            [None if self.layers[n][column] is None else self.layers[n][column] * 1e6 for n in names], dtype="Float64")
            for column in TERM_COLUMNS}
        for key in ("macs", "acs"):
            data[key] = pd.array([self.layer_counts.get(n, {}).get(key) for n in names], dtype="Float64")
        frame = pd.DataFrame(data, index=pd.Index(names, name="layer"))
        frame.attrs.update(convention=self.convention, costs=self.costs.name, memory=self.memory,
                           unit="microjoules per image over the workload; macs, acs per image")
        return frame

    def energy_at_rate_j(self, firing_rate: float) -> float | None:
        """Total per image if every spiking layer fired at ``firing_rate``: linear in the rate.

        The ops the convention charges at a firing rate cost ``e_ac * fr * convertible``, and under a
        memory model that reads a weight per AC (``no-reuse``) that read too; MACs, neuron updates and the
        rest of memory keep their values (they do not depend on the rate here).
        """
        fixed = self.counts["acs"] - self.counts["acs_converted"]  # ACs the sweep leaves alone
        acs = fixed + firing_rate * self.counts["convertible"]
        mac = _term_j(self.costs.e_mac_pj, self.counts["macs"]) if self.counts["macs"] else 0.0
        ac = _term_j(self.costs.e_ac_pj, acs) if acs or self.counts["convertible"] else 0.0
        if mac is None or ac is None:
            return None
        other = [self.per_image[c] or 0.0 for c in ("neuron_j", "memory_j") if c[:-2] in self.included]
        if "memory" in self.included:  # the weight reads that move with the ACs
            other += [-self.counts.get("memory_converted_j", 0.0),
                      firing_rate * self.counts.get("memory_convertible_j", 0.0)]
        return mac + ac + math.fsum(other)

    def sweep(self, rates: list[float]) -> list[dict[str, float | None]]:
        """``[{"firing_rate": fr, "energy_j": E(fr)}]``."""
        return [{"firing_rate": fr, "energy_j": self.energy_at_rate_j(fr)} for fr in rates]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the preset by name only (a study stores each preset once)."""
        return {"convention": self.convention, "costs": self.costs.name, "per_image": self.per_image,
                "per_step": self.per_step, "layers": self.layers, "counts": self.counts,
                "undefined": self.undefined, "included": self.included, "layer_counts": self.layer_counts,
                "memory": self.memory, "unassigned": self.unassigned, "memory_parts": self.memory_parts}

    @classmethod
    def from_dict(cls, data: dict[str, Any], costs: dict[str, EnergyCosts]) -> Estimate:
        """The inverse of :meth:`to_dict`, the preset looked up by name in ``costs``.

        Raises:
            KeyError: the estimate's preset is not in ``costs``.
        """
        if data["costs"] not in costs:
            raise KeyError(f"an estimate under preset {data['costs']!r}, which the study does not list")
        return cls(**{**data, "costs": costs[data["costs"]]})


def _terms_j(costs: EnergyCosts, macs: float, acs: float, updates: float, memory_j: float | None,
             included: list[str], int_macs: float = 0.0) -> dict[str, float | None]:
    """The terms in joules; ``int_macs`` of the ``macs`` are integer ones, at ``e_int_mac_pj`` where defined."""
    int_price = costs.e_int_mac_pj if costs.e_int_mac_pj is not None else costs.e_mac_pj
    mac_j = _add(_term_j(costs.e_mac_pj, macs - int_macs), _term_j(int_price, int_macs)) if int_macs else \
        _term_j(costs.e_mac_pj, macs)
    ac_j = _term_j(costs.e_ac_pj, acs)
    neuron_j = _term_j(costs.e_neuron_update_pj, updates)
    parts = {"mac": (mac_j, macs), "ac": (ac_j, acs), "neuron": (neuron_j, updates), "memory": (memory_j, 0)}
    total: float | None = 0.0
    for term in ("mac", "ac"):
        value, count = parts[term]
        if value is None and count:
            total = None
        elif value is not None and total is not None:
            total += value
    if total is not None:
        total += math.fsum(parts[t][0] or 0.0 for t in ("neuron", "memory") if t in included)
    return {"mac_j": mac_j, "ac_j": ac_j, "compute_j": _add(mac_j, ac_j), "neuron_j": neuron_j,
            "memory_j": memory_j, "total_j": total}


def estimate(profile: Profile, costs: EnergyCosts, convention: str = "strict") -> Estimate:
    """Energy per image, per layer and per diffusion step of ``profile`` under ``costs`` and ``convention``;
    the memory term by the memory model of ``costs`` (:func:`memory_of`; off when it is ``none``).

    Raises:
        profiling.conventions.ConventionError: unknown convention.
        CostsError: a memory model that cannot take the preset.
    """
    steps = split_steps(profile, convention)
    memory = memory_of(costs)
    try:
        charged = charge(profile, memory, steps)
    except MemoryModelError as err:
        raise CostsError(str(err)) from None
    included = [t for t, (attr, _) in TERMS.items() if t != "memory" and getattr(costs, attr) is not None]
    if charged is not None:
        included.append("memory")
    undefined = {t: costs.undefined(t) for t, (attr, _) in TERMS.items()
                 if getattr(costs, attr) is None and t != "memory"}
    cells = charged.cells if charged is not None else {}
    # per layer: macs, acs, convertible, updates, memory J, converted ACs, memory J per AC x converted, x convertible,
    # integer MACs
    layer_counts: dict[str, list[list[float]]] = {r.name: [[] for _ in range(9)] for r in profile.layers}
    integer = {r.name for r in profile.layers if r.precision != "fp32"}
    per_step = []
    for step, splits in zip(profile.steps, steps, strict=True):
        rows = []
        for r in profile.steps_of(step.index):
            split = splits.get(r.layer)
            macs, acs, conv = (split.macs, split.acs, split.convertible) if split else (0, 0, 0)
            _, mem_j, per_ac = cells.get((step.index, r.layer), (0.0, 0.0, 0.0))
            converted = acs if conv else 0
            int_macs = macs if r.layer in integer else 0
            acc = layer_counts[r.layer]
            for i, v in enumerate((macs, acs, conv, r.neuron_updates, mem_j, converted, per_ac * converted,
                                   per_ac * conv, int_macs)):
                acc[i].append(v)
            rows.append((macs, acs, r.neuron_updates, mem_j, int_macs))
        sums = [math.fsum(col) for col in zip(*rows, strict=True)] if rows else [0.0] * 5
        per_step.append(_terms_j(costs, *sums[:3], sums[3] if charged else None, included, sums[4]))
    layers, charged_counts = {}, {}
    totals: list[list[float]] = [[] for _ in range(9)]
    for name, acc in layer_counts.items():
        sums = [math.fsum(col) for col in acc]
        for i, col in enumerate(acc):
            totals[i].extend(col)
        layers[name] = _terms_j(costs, sums[0], sums[1], sums[3], sums[4] if charged else None, included, sums[8])
        charged_counts[name] = {"macs": sums[0], "acs": sums[1]}
    macs, acs, conv, updates, mem_j, converted, mem_converted, mem_convertible, int_macs = (
        math.fsum(col) for col in totals)
    if int_macs and costs.e_int_mac_pj is None:
        undefined["int_mac"] = f"integer MACs priced at the MAC cost: an integer figure is {costs.undefined('int_mac')}"
    counts = {"macs": macs, "int_macs": int_macs, "acs": acs, "convertible": conv, "acs_converted": converted,
              "neuron_updates": updates, "bytes": profile.per_image.get("bytes", 0),
              "memory_converted_j": mem_converted, "memory_convertible_j": mem_convertible}
    parts: dict[str, float] = {}
    if charged is not None:
        parts = {**charged.breakdown, **{f"{k}_bytes": v for k, v in charged.byte_counts.items()}}
        counts["memory_bytes"] = math.fsum(b for b, _, _ in cells.values())
    return Estimate(convention=convention, costs=costs,
                    per_image=_terms_j(costs, macs, acs, updates, mem_j if charged else None, included, int_macs),
                    per_step=per_step, layers=layers, counts=counts, undefined=undefined, included=included,
                    layer_counts=charged_counts, memory=memory.spec,
                    unassigned=dict(charged.unassigned) if charged else {}, memory_parts=parts)


def energy_frame(profile: Profile, costs: EnergyCosts, convention: str = "strict") -> Any:
    """One row per layer (index ``name``): the columns of :func:`estimate`, joules per image, as a pandas
    DataFrame (pandas imported on use)."""
    import pandas as pd

    frame = pd.DataFrame.from_dict(estimate(profile, costs, convention).layers, orient="index")
    frame.index.name = "name"
    return frame


def break_even(model: Estimate, baseline_j: float | None) -> tuple[float | None, str | None]:
    """The firing rate at which ``model`` costs ``baseline_j`` per image (its energy is linear in the rate),
    or ``None`` and why in words: a rate outside 0..1 is no break-even a neuron can reach.

    Returns:
        ``(rate in [0, 1], None)`` or ``(None, reason)``.
    """
    if baseline_j is None:
        return None, "the baseline's total is undefined"
    if not model.counts["convertible"]:
        return None, NO_RATE_DEPENDENCE
    at_zero, at_one = model.energy_at_rate_j(0.0), model.energy_at_rate_j(1.0)
    if at_zero is None or at_one is None:
        return None, "a term the total needs is undefined"
    if at_one == at_zero:
        return None, NO_RATE_DEPENDENCE
    rate = (baseline_j - at_zero) / (at_one - at_zero)
    if rate < 0:
        return None, DEARER_WHEN_SILENT
    if rate > 1:
        return None, CHEAPER_AT_FULL_RATE
    return rate, None


def break_even_rate(model: Estimate, baseline_j: float | None) -> float | None:
    """:func:`break_even`'s rate alone: in [0, 1], or ``None`` (no break-even a neuron can reach, the cost
    does not depend on the rate, or a term it needs is undefined)."""
    return break_even(model, baseline_j)[0]
