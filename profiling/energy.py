"""Estimated energy: op counts of a :class:`Profile` times cited energy constants.

Pure functions. Compute energy is ``E = e_mac * MACs + e_ac * ACs`` (ARCHITECTURE.md §4),
in both counting conventions (strict and paper); a memory term (operand bytes of
synaptic ops x pJ/byte) and a neuron-update term (membrane updates x pJ) are
optional and kept in their own columns, never folded into compute.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from profiling.profile import LayerRecord, Profile

PJ = 1e-12  # joules per picojoule
HOROWITZ_2014 = (
    "M. Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014, "
    "45 nm: MAC = mult + add"
)


class CostsError(ValueError):
    """Energy constants that are missing, negative or malformed."""


@dataclass(frozen=True)
class EnergyCosts:
    """Energy per operation, with where the numbers come from.

    Attributes:
        name: Preset name or file the constants came from.
        e_mac_pj: Energy of one multiply-accumulate, pJ.
        e_ac_pj: Energy of one accumulate, pJ.
        source: Citation or provenance of the constants.
        e_mem_pj_per_byte: Optional memory term, pJ per operand byte of synaptic ops.
        e_neuron_update_pj: Optional neuron term, pJ per membrane update.
    """

    name: str
    e_mac_pj: float
    e_ac_pj: float
    source: str
    e_mem_pj_per_byte: float | None = None
    e_neuron_update_pj: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("e_") and value is not None and (not math.isfinite(value) or value < 0):
                raise CostsError(f"{f.name} must be a finite number >= 0, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


COST_PRESETS: dict[str, EnergyCosts] = {
    "45nm-fp32": EnergyCosts("45nm-fp32", 4.6, 0.9, HOROWITZ_2014 + "; fp32 mult 3.7 pJ, add 0.9 pJ"),
    "45nm-fp16": EnergyCosts("45nm-fp16", 1.5, 0.4, HOROWITZ_2014 + "; fp16 mult 1.1 pJ, add 0.4 pJ"),
    "45nm-int8": EnergyCosts("45nm-int8", 0.23, 0.03, HOROWITZ_2014 + "; int8 mult 0.2 pJ, add 0.03 pJ"),
}
DEFAULT_COSTS = "45nm-fp32"


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


ENERGY_COLUMNS = ("mac_j", "ac_j", "compute_j", "mac_paper_j", "ac_paper_j", "compute_paper_j", "memory_j", "neuron_j")


def layer_energy_j(record: LayerRecord | dict[str, Any], costs: EnergyCosts) -> dict[str, float | None]:
    """Energy columns of one layer (or of a totals dict with the same count keys), joules.

    ``memory_j`` and ``neuron_j`` are ``None`` where their constant is not set.
    """
    get = (lambda k: record[k]) if isinstance(record, dict) else (lambda k: getattr(record, k))
    mac_j = costs.e_mac_pj * get("macs") * PJ
    ac_j = costs.e_ac_pj * get("acs") * PJ
    mac_paper_j = costs.e_mac_pj * get("macs_paper") * PJ
    ac_paper_j = costs.e_ac_pj * get("acs_paper") * PJ
    memory = None if costs.e_mem_pj_per_byte is None else costs.e_mem_pj_per_byte * get("bytes") * PJ
    neuron = None if costs.e_neuron_update_pj is None else costs.e_neuron_update_pj * get("neuron_updates") * PJ
    return {
        "mac_j": mac_j, "ac_j": ac_j, "compute_j": mac_j + ac_j,
        "mac_paper_j": mac_paper_j, "ac_paper_j": ac_paper_j, "compute_paper_j": mac_paper_j + ac_paper_j,
        "memory_j": memory, "neuron_j": neuron,
    }


@dataclass(frozen=True)
class EnergyEstimate:
    """Estimated energy of a profiled workload, joules.

    Attributes:
        costs: The constants used, with their source.
        per_image: Column -> joules per image over the whole workload.
        per_step: Column -> joules per image for each model call (diffusion step).
        layers: Layer name -> column -> joules per image.
        total_j: compute (strict) plus the optional memory and neuron terms that are set.
    """

    costs: EnergyCosts
    per_image: dict[str, float | None]
    per_step: list[dict[str, float | None]]
    layers: dict[str, dict[str, float | None]]
    total_j: float

    def to_dict(self) -> dict[str, Any]:
        return {"costs": self.costs.to_dict(), "per_image": self.per_image, "per_step": self.per_step,
                "layers": self.layers, "total_j": self.total_j}


def _sum_columns(rows: list[dict[str, float | None]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for column in ENERGY_COLUMNS:
        values = [r[column] for r in rows]
        out[column] = None if any(v is None for v in values) else sum(v for v in values if v is not None)
    return out


def estimate_energy(profile: Profile, costs: EnergyCosts) -> EnergyEstimate:
    """Per-layer, per-image and per-step energy of ``profile`` under ``costs``."""
    layers = {r.name: layer_energy_j(r, costs) for r in profile.layers}
    per_image = _sum_columns(list(layers.values())) if layers else dict.fromkeys(ENERGY_COLUMNS, 0.0)
    per_step = [layer_energy_j(s.totals, costs) for s in profile.steps]
    total = per_image["compute_j"] or 0.0
    total += (per_image["memory_j"] or 0.0) + (per_image["neuron_j"] or 0.0)
    return EnergyEstimate(costs=costs, per_image=per_image, per_step=per_step, layers=layers, total_j=total)


def paper_energy_at_rate_j(profile: Profile, costs: EnergyCosts, firing_rate: float) -> float:
    """Compute energy per image under the paper convention if every spiking layer fired at ``firing_rate``.

    Layers the convention turns into ACs cost ``e_ac * fr * dense MACs``; all others keep
    their counts. Linear in ``firing_rate``.
    """
    joules = 0.0
    for r in profile.layers:
        acs = firing_rate * r.dense_macs_spiking if r.dense_macs_spiking else r.acs_paper
        joules += (costs.e_mac_pj * r.macs_paper + costs.e_ac_pj * acs) * PJ
    return joules


def firing_rate_sweep(profile: Profile, costs: EnergyCosts, rates: list[float]) -> list[dict[str, float]]:
    """``[{"firing_rate": fr, "energy_j": E(fr)}]`` under the paper convention."""
    return [{"firing_rate": fr, "energy_j": paper_energy_at_rate_j(profile, costs, fr)} for fr in rates]


def break_even_firing_rate(profile: Profile, costs: EnergyCosts, baseline_j: float) -> float | None:
    """Firing rate at which ``profile`` (paper convention) costs ``baseline_j`` per image.

    Returns ``None`` when the cost does not depend on the firing rate (no layer is
    converted). A value above 1 means the model costs less than the baseline at any
    rate a neuron can fire; below 0 means it costs more even when silent.
    """
    at_zero = paper_energy_at_rate_j(profile, costs, 0.0)
    slope = paper_energy_at_rate_j(profile, costs, 1.0) - at_zero
    if slope == 0:
        return None
    return (baseline_j - at_zero) / slope
