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

from profiling.conventions import COUNTING_CONVENTIONS, DEFAULT_CONVENTIONS
from profiling.energy import COST_PRESETS, EnergyCosts, break_even_rate, estimate
from profiling.records import Profile, Workload, workload_label

SWEEP_RATES = tuple(i / 20 for i in range(21))  # 0 %, 5 %, ..., 100 %

# What each named convention charges (profiling.conventions), in one line each.
CONVENTION_TEXT = {name: c.summary for name, c in COUNTING_CONVENTIONS.items()}


@dataclass(frozen=True)
class ModelStudy:
    """One compared model.

    Attributes:
        label: The target as the user named it (preset or checkpoint path).
        kind: ``sdit`` or ``dit``.
        description: e.g. ``sdit-small at step 21500 (EMA weights)``.
        params_trainable: Parameters with ``requires_grad`` (``None``: not known, a study of a profile alone).
        params_total: Every parameter (frozen ones included, e.g. DiT's sin-cos position embedding).
        profile: Counts of the study's workload.
        provenance: The checkpoint's own ``provenance.json`` where one is shipped.
        measured: Measured energy (``energy_j_per_image``, ``measurement`` with power trace...) or ``None``.
        measured_reason: Why there is no measurement, in one line, when ``measured`` is ``None``.
    """

    label: str
    kind: str
    description: str
    params_trainable: int | None
    params_total: int | None
    profile: Profile
    provenance: dict[str, Any] | None = None
    measured: dict[str, Any] | None = None
    measured_reason: str | None = None

    @property
    def spiking(self) -> bool:
        return self.profile.time_steps > 0


@dataclass(frozen=True)
class PresetInfo:
    """A cost preset as the report lists it: each term with its unit, or ``not defined by <preset>``."""

    name: str
    terms: dict[str, str]
    scope: str
    evidence: str
    node: str
    citation: str
    checked: str = ""


@dataclass(frozen=True)
class Study:
    """Two or more models over one workload, with energies under presets and conventions.

    The ``*_rows`` are long-format records (one dict per row), ready for a DataFrame:
    ``energy_rows``: model, preset, convention, energy_j (``None``: a term the preset does not define is
    needed; ``undefined`` then says which), each term's ``mac_j``, ``ac_j``, ``neuron_j``, ``memory_j``
    (``None``: undefined or not added), ``included`` (the terms ``energy_j`` adds), ``undefined_terms``;
    ``layer_energy_rows``: model, preset, convention, layer, energy_j;
    ``step_energy_rows``: model, preset, convention, step, t, energy_j;
    ``sweep_rows``: model, preset, convention, firing_rate, energy_j;
    ``break_even_rows``: model, baseline, preset, convention, baseline_j, firing_rate (``None``: no dependence);
    ``layer_step_rows``: model, layer, step, t, spikes, neuron_updates, firing_rate (empty when not recorded).
    """

    models: list[ModelStudy]
    workload: Workload
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

    def energy_j(self, model: str, preset: str, convention: str) -> float | None:
        for row in self.energy_rows:
            if (row["model"], row["preset"], row["convention"]) == (model, preset, convention):
                return row["energy_j"]
        raise KeyError(f"no energy for {model!r} under {preset!r}, {convention!r}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["workload"] = self.workload.to_dict()
        for m, raw in zip(self.models, out["models"], strict=True):
            raw["profile"] = m.profile.to_dict()
        return out


TERMS = ("mac", "ac", "neuron", "memory")  # the terms of an estimate, in the order tables show them


def _energy_row(key: dict[str, str], est: Any) -> dict[str, Any]:
    """One ``energy_rows`` record: the total, each term (``<term>_j``), which terms the total adds and
    what is undefined."""
    return {**key, "energy_j": est.total_j,
            "undefined": "; ".join(est.undefined.values()) if est.total_j is None else "",
            **{f"{t}_j": est.per_image[f"{t}_j"] for t in TERMS}, "included": list(est.included),
            "undefined_terms": dict(est.undefined)}


def preset_info(costs: EnergyCosts) -> PresetInfo:
    """A :class:`PresetInfo` of a cost preset (or of a user's TOML constants)."""
    return PresetInfo(name=costs.name, terms=costs.terms(), scope=costs.scope, evidence=costs.evidence,
                      node=costs.process or "not stated", citation=costs.source, checked=costs.checked)


def study_from_profiles(
    models: list[ModelStudy],
    presets: list[EnergyCosts] | None = None,
    conventions: tuple[str, ...] = DEFAULT_CONVENTIONS,
    headline_preset: str | None = None,
    headline_convention: str = "paper",
) -> Study:
    """Fill a :class:`Study` from profiles of one workload with :func:`profiling.energy.estimate`.

    Raises:
        ValueError: no model, profiles of different workloads, or a headline
            preset / convention that is not among those given.
    """
    if not models:
        raise ValueError("a study needs at least one model")
    workloads = {m.profile.workload for m in models}
    if len(workloads) != 1:
        raise ValueError("the models were profiled on different workloads: "
                         + "; ".join(sorted(workload_label(w) for w in workloads)))
    presets = presets or list(COST_PRESETS.values())
    headline_preset = headline_preset or presets[0].name
    if headline_preset not in {c.name for c in presets} or headline_convention not in conventions:
        raise ValueError("the headline preset and convention must be among those compared")
    energy, layers, steps, sweep, breaks, layer_steps = [], [], [], [], [], []
    estimates = {}
    for m in models:
        for costs in presets:
            for conv in conventions:
                est = estimate(m.profile, costs, conv)
                estimates[(m.label, costs.name, conv)] = est
                key = {"model": m.label, "preset": costs.name, "convention": conv}
                energy.append(_energy_row(key, est))
                layers += [{**key, "layer": name, "energy_j": e["total_j"]} for name, e in est.layers.items()]
                steps += [{**key, "step": s.index, "t": s.t, "energy_j": e["total_j"]}
                          for s, e in zip(m.profile.steps, est.per_step, strict=True)]
                if m.spiking and est.counts["convertible"]:
                    sweep += [{**key, **row} for row in est.sweep(list(SWEEP_RATES))]
        layer_steps += [{"model": m.label, "layer": r.layer, "step": r.step, "t": r.t, "spikes": r.spikes,
                         "neuron_updates": r.neuron_updates, "firing_rate": r.firing_rate}
                        for r in m.profile.layer_steps if r.neuron_updates]
    for s in (m for m in models if m.spiking):
        for b in (m for m in models if not m.spiking):
            for costs in presets:
                for conv in conventions:
                    base_j = estimates[(b.label, costs.name, conv)].total_j
                    breaks.append({"model": s.label, "baseline": b.label, "preset": costs.name, "convention": conv,
                                   "baseline_j": base_j,
                                   "firing_rate": break_even_rate(estimates[(s.label, costs.name, conv)], base_j)})
    return Study(
        models=models, workload=models[0].profile.workload, presets=[preset_info(c) for c in presets],
        conventions={c: CONVENTION_TEXT[c] for c in conventions}, headline_preset=headline_preset,
        headline_convention=headline_convention, energy_rows=energy, layer_energy_rows=layers,
        step_energy_rows=steps, sweep_rows=sweep, break_even_rows=breaks, layer_step_rows=layer_steps,
    )


def profile_study(profile: Profile, costs: EnergyCosts, conventions: tuple[str, ...] = ("strict", "paper"),
                  headline_convention: str = "strict") -> Study:
    """A study of one profile under one preset (what ``sdit profile`` prints); parameters are not known."""
    model = ModelStudy(label=profile.model, kind=profile.kind, description=profile.model, params_trainable=None,
                       params_total=None, profile=profile)
    return study_from_profiles([model], [costs], conventions, costs.name, headline_convention)


def study_from_comparison(
    comparison: Any,
    descriptions: dict[str, str] | None = None,
    provenance: dict[str, dict[str, Any] | None] | None = None,
    headline_preset: str | None = None,
    headline_convention: str | None = None,
) -> Study:
    """The report's view of a :class:`profiling.compare.Comparison`: its numbers, regrouped, none recomputed.

    Args:
        comparison: The study (``Comparison``, or its ``to_dict()`` read back with ``Comparison.from_dict``).
        descriptions: Target name -> what it is (e.g. ``sdit-small at step 21500 (EMA weights)``).
        provenance: Target name -> its shipped ``provenance.json``.
        headline_preset: Default the comparison's first preset.
        headline_convention: Default ``paper`` when compared, else the first convention.

    Raises:
        ValueError: no target, or a headline not in the comparison.
    """
    if not comparison.targets:
        raise ValueError("a study needs at least one model")
    descriptions, provenance = descriptions or {}, provenance or {}
    conventions = list(comparison.conventions)
    headline_preset = headline_preset or comparison.costs[0].name
    headline_convention = headline_convention or ("paper" if "paper" in conventions else conventions[0])
    if headline_preset not in {c.name for c in comparison.costs} or headline_convention not in conventions:
        raise ValueError("the headline preset and convention must be among those compared")
    models, energy, layers, steps, sweep, layer_steps = [], [], [], [], [], []
    for t in comparison.targets:
        models.append(ModelStudy(
            label=t.name, kind=t.kind, description=descriptions.get(t.name, t.source),
            params_trainable=t.params["trainable"], params_total=t.params["total"], profile=t.profile,
            provenance=provenance.get(t.name), measured=t.measured, measured_reason=t.measured_reason))
        for te in t.estimates:
            est = te.estimate
            key = {"model": t.name, "preset": te.costs, "convention": te.convention}
            energy.append(_energy_row(key, est))
            layers += [{**key, "layer": name, "energy_j": e["total_j"]} for name, e in est.layers.items()]
            steps += [{**key, "step": s.index, "t": s.t, "energy_j": e["total_j"]}
                      for s, e in zip(t.profile.steps, est.per_step, strict=True)]
            if t.spiking and est.counts["convertible"]:
                sweep += [{**key, **row} for row in te.sweep]
        layer_steps += [{"model": t.name, "layer": r.layer, "step": r.step, "t": r.t, "spikes": r.spikes,
                         "neuron_updates": r.neuron_updates, "firing_rate": r.firing_rate}
                        for r in t.profile.layer_steps if r.neuron_updates]
    breaks = [{"model": b.model, "baseline": b.baseline, "preset": b.costs, "convention": b.convention,
               "baseline_j": b.baseline_j, "firing_rate": b.firing_rate, "reason": b.reason}
              for b in comparison.break_even]
    return Study(
        models=models, workload=comparison.workload, presets=[preset_info(c) for c in comparison.costs],
        conventions=dict(comparison.conventions), headline_preset=headline_preset,
        headline_convention=headline_convention, energy_rows=energy, layer_energy_rows=layers,
        step_energy_rows=steps, sweep_rows=sweep, break_even_rows=breaks, layer_step_rows=layer_steps,
        source=comparison.to_dict(),
    )
