"""What the report reads: a :class:`Study`, plain records taken from a comparison.

The report never computes an energy: every number it shows is read from the study's
records, which :func:`study_from_profiles` fills from the library's results (profiles and
:mod:`profiling.energy`). Keeping the report's input in this one small shape is the
adapter between the study library and the presentation: when the library's comparison
type changes, only the function that builds a :class:`Study` changes.

Units: energies in joules per image over the whole workload, firing rates as fractions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from profiling.energy import (
    COST_PRESETS,
    EnergyCosts,
    break_even_firing_rate,
    estimate_energy,
    paper_energy_at_rate_j,
)
from profiling.profile import CONVENTIONS as COUNT_CONVENTIONS
from profiling.profile import Profile, workload_label

SWEEP_RATES = tuple(i / 20 for i in range(21))  # 0 %, 5 %, ..., 100 %

# What each energy convention charges (the two the profile records today).
CONVENTION_TEXT = {
    "strict": COUNT_CONVENTIONS["strict"] + ": an op is an AC only when one of its inputs is spikes",
    "paper": COUNT_CONVENTIONS["paper"],
}


@dataclass(frozen=True)
class ModelStudy:
    """One compared model.

    Attributes:
        label: The target as the user named it (preset or checkpoint path).
        kind: ``sdit`` or ``dit``.
        description: e.g. ``sdit-small at step 21500 (EMA weights)``.
        params_trainable: Parameters with ``requires_grad``.
        params_total: Every parameter (frozen ones included, e.g. DiT's sin-cos position embedding).
        profile: Counts of the study's workload.
        provenance: The checkpoint's own ``provenance.json`` where one is shipped.
        measured: Measured energy (``energy_j_per_image``, ``measurement`` with power trace...) or ``None``.
        measured_reason: Why there is no measurement, in one line, when ``measured`` is ``None``.
    """

    label: str
    kind: str
    description: str
    params_trainable: int
    params_total: int
    profile: Profile
    provenance: dict[str, Any] | None = None
    measured: dict[str, Any] | None = None
    measured_reason: str | None = None

    @property
    def spiking(self) -> bool:
        return self.profile.time_steps > 0


@dataclass(frozen=True)
class PresetInfo:
    """A cost preset as the report lists it: per-term values (pJ, ``None`` = not defined)."""

    name: str
    terms_pj: dict[str, float | None]
    scope: str
    evidence: str
    node: str
    citation: str
    checked: str = ""


@dataclass(frozen=True)
class Study:
    """Two or more models over one workload, with energies under presets and conventions.

    The ``*_rows`` are long-format records (one dict per row), ready for a DataFrame:
    ``energy_rows``: model, preset, convention, energy_j;
    ``layer_energy_rows``: model, preset, convention, layer, energy_j;
    ``step_energy_rows``: model, preset, convention, step, t, energy_j;
    ``sweep_rows``: model, preset, convention, firing_rate, energy_j;
    ``break_even_rows``: model, baseline, preset, convention, baseline_j, firing_rate (``None``: no dependence);
    ``layer_step_rows``: model, layer, step, t, spikes, neuron_updates, firing_rate (empty when not recorded).
    """

    models: list[ModelStudy]
    workload: dict[str, Any]
    presets: list[PresetInfo]
    conventions: dict[str, str]
    headline_preset: str
    headline_convention: str
    energy_rows: list[dict[str, Any]]
    layer_energy_rows: list[dict[str, Any]]
    step_energy_rows: list[dict[str, Any]]
    sweep_rows: list[dict[str, Any]]
    break_even_rows: list[dict[str, Any]]
    layer_step_rows: list[dict[str, Any]] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)  # the comparison's own to_dict(), embedded in the page

    @property
    def workload_label(self) -> str:
        return workload_label(self.workload)

    def model(self, label: str) -> ModelStudy:
        for m in self.models:
            if m.label == label:
                return m
        raise KeyError(f"no model {label!r} in this study")

    def energy_j(self, model: str, preset: str, convention: str) -> float:
        for row in self.energy_rows:
            if (row["model"], row["preset"], row["convention"]) == (model, preset, convention):
                return row["energy_j"]
        raise KeyError(f"no energy for {model!r} under {preset!r}, {convention!r}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for m, raw in zip(self.models, out["models"]):
            raw["profile"] = m.profile.to_dict()
        return out


def preset_info(costs: EnergyCosts) -> PresetInfo:
    """A :class:`PresetInfo` for one of today's 45 nm presets (or a user's TOML constants)."""
    terms = {"mac": costs.e_mac_pj, "ac": costs.e_ac_pj, "memory_per_byte": costs.e_mem_pj_per_byte,
             "neuron_update": costs.e_neuron_update_pj}
    grade = "circuit estimate" if costs.name.startswith("45nm") else "user-supplied"
    node = "45 nm" if costs.name.startswith("45nm") else "unknown"
    return PresetInfo(name=costs.name, terms_pj=terms, scope="per-op terms", evidence=grade, node=node,
                      citation=costs.source)


def _energy_under(profile: Profile, costs: EnergyCosts) -> dict[str, Any]:
    est = estimate_energy(profile, costs)
    layer = {c: {name: e["compute_j" if c == "strict" else "compute_paper_j"] for name, e in est.layers.items()}
             for c in CONVENTION_TEXT}
    steps = {c: [e["compute_j" if c == "strict" else "compute_paper_j"] for e in est.per_step] for c in CONVENTION_TEXT}
    total = {"strict": est.per_image["compute_j"], "paper": est.per_image["compute_paper_j"]}
    return {"total": total, "layer": layer, "steps": steps}


def study_from_profiles(
    models: list[ModelStudy],
    presets: list[EnergyCosts] | None = None,
    headline_preset: str | None = None,
    headline_convention: str = "paper",
) -> Study:
    """Fill a :class:`Study` from profiles of one workload with :mod:`profiling.energy`.

    Raises:
        ValueError: fewer than two models, or profiles of different workloads.
    """
    if len(models) < 2:
        raise ValueError("a comparison needs two or more models")
    workloads = {workload_label(m.profile.workload) for m in models}
    if len(workloads) != 1:
        raise ValueError(f"the models were profiled on different workloads: {', '.join(sorted(workloads))}")
    presets = presets or list(COST_PRESETS.values())
    headline_preset = headline_preset or presets[0].name
    energy, layers, steps, sweep, breaks = [], [], [], [], []
    for m in models:
        for costs in presets:
            e = _energy_under(m.profile, costs)
            for conv in CONVENTION_TEXT:
                key = {"model": m.label, "preset": costs.name, "convention": conv}
                energy.append({**key, "energy_j": e["total"][conv]})
                layers += [{**key, "layer": name, "energy_j": j} for name, j in e["layer"][conv].items()]
                steps += [{**key, "step": s.index, "t": s.t, "energy_j": j}
                          for s, j in zip(m.profile.steps, e["steps"][conv])]
            if m.spiking:
                sweep += [{"model": m.label, "preset": costs.name, "convention": "paper", "firing_rate": fr,
                           "energy_j": paper_energy_at_rate_j(m.profile, costs, fr)} for fr in SWEEP_RATES]
    baselines = [m for m in models if not m.spiking]
    for m in (m for m in models if m.spiking):
        for b in baselines:
            for costs in presets:
                base_j = next(r["energy_j"] for r in energy if r["model"] == b.label and r["preset"] == costs.name
                              and r["convention"] == "paper")
                breaks.append({"model": m.label, "baseline": b.label, "preset": costs.name, "convention": "paper",
                               "baseline_j": base_j,
                               "firing_rate": break_even_firing_rate(m.profile, costs, base_j)})
    return Study(
        models=models, workload=dict(models[0].profile.workload), presets=[preset_info(c) for c in presets],
        conventions=dict(CONVENTION_TEXT), headline_preset=headline_preset, headline_convention=headline_convention,
        energy_rows=energy, layer_energy_rows=layers, step_energy_rows=steps, sweep_rows=sweep,
        break_even_rows=breaks,
    )
