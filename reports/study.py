"""What the report reads: a :class:`Study`, plain records regrouped from a finished comparison.

The report never computes an energy: every number it shows is read from a
:class:`profiling.compare.Comparison` (:func:`study_from_comparison`, or :func:`study_view` of a
:class:`profiling.study.FinishedStudy`), regrouped here into long-format rows, none recomputed; the verdict
matrix (counting convention x memory model) and the per-layer memory energies come from the pure functions
of :mod:`profiling.compare` on the comparison's stored profiles.
Keeping the report's input in this one small shape is the adapter between the study floor and
the presentation: when the comparison type changes, only the functions that build a
:class:`Study` change.

Units: energies in joules per image over the whole workload, firing rates as fractions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from profiling.compare import Comparison, layer_memory, verdict_matrix, with_frontier
from profiling.energy import EnergyCosts, memory_of
from profiling.frontier import Frontier
from profiling.records import Profile
from profiling.study import FinishedStudy
from sdit.workload import Workload


@dataclass(frozen=True)
class ModelStudy:
    """One compared model.

    Attributes:
        label: The short label every card, legend and table shows (e.g. ``sdit-small@21500``).
        kind: ``sdit`` or ``dit``.
        description: e.g. ``sdit-small at step 21500 (EMA weights)``.
        params_trainable: Parameters with ``requires_grad`` (``None``: not known, a study of profiles alone).
        params_total: Every parameter (frozen ones included, e.g. DiT's sin-cos position embedding).
        profile: Counts of the study's workload.
        provenance: The checkpoint's own ``provenance.json`` where one is shipped.
        measured: Measured energy (``energy_j_per_image``, ``measurement`` with power trace...) or ``None``.
        measured_reason: Why there is no measurement, in one line, when ``measured`` is ``None``.
        counts: Convention -> ``per_image`` (``macs``, ``acs``) and ``layers`` (layer -> ``macs``, ``acs``) as
            that convention charges them (read from the study's estimates).
        target: The target as the user named it (preset or checkpoint path); the label where not given.
        untrained: A preset's weights, never trained: firing rates, spikes and ACs say nothing of a trained model.
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
    counts: dict[str, dict[str, Any]] = field(default_factory=dict)
    target: str = ""
    untrained: bool = False

    @property
    def spiking(self) -> bool:
        return self.profile.is_spiking

    @property
    def named(self) -> str:
        """The label, with ``(untrained weights)`` after it for a preset: how a card or a title names it."""
        return f"{self.label} (untrained weights)" if self.untrained else self.label

    def count(self, convention: str, key: str, layer: str | None = None) -> float | None:
        """``macs`` or ``acs`` per image (of ``layer``, else of the model) as ``convention`` charges them;
        ``None`` when the study did not estimate that convention."""
        if convention not in self.counts:
            return None
        counts = self.counts[convention]
        return counts["per_image"][key] if layer is None else counts["layers"][layer][key]


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
    ``layer_step_rows``: model, layer, step, t, spikes, neuron_updates, firing_rate (empty when not recorded);
    ``verdict_rows``: the verdict matrix at the headline preset (:func:`profiling.compare.verdict_matrix`), one
    :class:`profiling.compare.Verdict` as a dict per (spiking model, baseline, convention, memory model), the
    models by label; ``layer_memory_rows``: model, memory (``MODEL:PRESET``), layer, compute_j, memory_j under
    the headline preset and convention, for every memory model of the matrix but ``none``;
    ``headline_memory``: the memory model and preset of the headline preset (``none``: compute only);
    ``frontier``: energy against domain FID (:class:`profiling.frontier.Frontier`), its models by label.
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
    verdict_rows: list[dict[str, Any]] = field(default_factory=list)
    layer_memory_rows: list[dict[str, Any]] = field(default_factory=list)
    headline_memory: str = "none"
    frontier: Frontier | None = None
    source: dict[str, Any] = field(default_factory=dict)  # the comparison's own to_dict(), embedded in the page

    @property
    def workload_label(self) -> str:
        return self.workload.label()

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


def _counts(est: Any) -> dict[str, Any]:
    """A :attr:`ModelStudy.counts` entry of one estimate."""
    return {"per_image": {"macs": est.counts["macs"], "acs": est.counts["acs"]}, "layers": dict(est.layer_counts)}


def preset_info(costs: EnergyCosts) -> PresetInfo:
    """A :class:`PresetInfo` of a cost preset (or of a user's TOML constants)."""
    return PresetInfo(name=costs.name, terms=costs.terms(), scope=costs.scope, evidence=costs.evidence,
                      node=costs.process or "not stated", citation=costs.source, checked=costs.checked)


def study_view(finished: FinishedStudy) -> Study:
    """The report's view of a finished study: its comparison with descriptions, provenance and headline (and its
    frontier, from the matched evaluations where the comparison carries none)."""
    comparison = finished.comparison
    if comparison.frontier is None:
        comparison = with_frontier(comparison, finished.run.evaluations)
    return study_from_comparison(comparison, finished.descriptions, finished.provenance,
                                 finished.headline_preset, finished.headline_convention, finished.labels)


def study_from_comparison(
    comparison: Comparison,
    descriptions: dict[str, str] | None = None,
    provenance: dict[str, dict[str, Any] | None] | None = None,
    headline_preset: str | None = None,
    headline_convention: str | None = None,
    labels: dict[str, str] | None = None,
) -> Study:
    """The report's view of a :class:`profiling.compare.Comparison`: its numbers, regrouped, none recomputed (the
    verdict matrix and per-layer memory: :func:`profiling.compare.verdict_matrix` and
    :func:`profiling.compare.layer_memory`).

    Args:
        comparison: The study (``Comparison``, or its ``to_dict()`` read back with ``Comparison.from_dict``).
        descriptions: Target name -> what it is (e.g. ``sdit-small at step 21500 (EMA weights)``).
        provenance: Target name -> its shipped ``provenance.json``.
        headline_preset: Default the comparison's first preset.
        headline_convention: Default ``paper`` when compared, else the first convention.
        labels: Target name -> the short label the study's rows use (:func:`profiling.study.short_labels`);
            a target not in it is labelled by its name.

    Raises:
        ValueError: no target, a headline not in the comparison, or two targets with one label.
    """
    if not comparison.targets:
        raise ValueError("a study needs at least one model")
    descriptions, provenance = descriptions or {}, provenance or {}
    label = {t.name: (labels or {}).get(t.name, t.name) for t in comparison.targets}
    if len(set(label.values())) != len(label):
        raise ValueError("each model needs its own label")
    conventions = list(comparison.conventions)
    headline_preset = headline_preset or comparison.costs[0].name
    headline_convention = headline_convention or ("paper" if "paper" in conventions else conventions[0])
    if headline_preset not in {c.name for c in comparison.costs} or headline_convention not in conventions:
        raise ValueError("the headline preset and convention must be among those compared")
    models, energy, layers, steps, sweep, layer_steps = [], [], [], [], [], []
    for t in comparison.targets:
        first = comparison.costs[0].name
        name = label[t.name]
        models.append(ModelStudy(
            label=name, target=t.name, untrained=t.source == "preset", kind=t.kind,
            description=descriptions.get(t.name, t.source),
            params_trainable=t.params["trainable"], params_total=t.params["total"], profile=t.profile,
            provenance=provenance.get(t.name), measured=t.measured, measured_reason=t.measured_reason,
            counts={te.convention: _counts(te.estimate) for te in t.estimates if te.costs == first}))
        for te in t.estimates:
            est = te.estimate
            key = {"model": name, "preset": te.costs, "convention": te.convention}
            energy.append(_energy_row(key, est))
            layers += [{**key, "layer": name, "energy_j": e["total_j"]} for name, e in est.layers.items()]
            steps += [{**key, "step": s.index, "t": s.t, "energy_j": e["total_j"]}
                      for s, e in zip(t.profile.steps, est.per_step, strict=True)]
            if t.spiking and est.counts["convertible"]:
                sweep += [{**key, **row} for row in te.sweep]
        layer_steps += [{"model": name, "layer": r.layer, "step": r.step, "t": r.t, "spikes": r.spikes,
                         "neuron_updates": r.neuron_updates, "firing_rate": r.firing_rate}
                        for r in t.profile.layer_steps if r.neuron_updates]
    headline_costs = next(c for c in comparison.costs if c.name == headline_preset)
    verdicts = [{**v.to_dict(), "model": label[v.model], "baseline": label[v.baseline]}
                for v in verdict_matrix(comparison, headline_costs)]
    layer_mem = [{"model": label[t.name], "memory": spec, "layer": layer, **values}
                 for t in comparison.targets
                 for spec, by_layer in layer_memory(t.profile, headline_costs, headline_convention).items()
                 if spec != "none" for layer, values in by_layer.items()]
    breaks = [{"model": label[b.model], "baseline": label[b.baseline], "preset": b.costs, "convention": b.convention,
               "baseline_j": b.baseline_j, "firing_rate": b.firing_rate, "reason": b.reason}
              for b in comparison.break_even]
    frontier = comparison.frontier or with_frontier(comparison, {}).frontier  # every energy, FIDs where any
    frontier = replace(frontier, points=[replace(p, model=label.get(p.model, p.model),
                                                 dominated_by=[label.get(d, d) for d in p.dominated_by])
                                         for p in frontier.points])
    return Study(
        models=models, workload=comparison.workload, presets=[preset_info(c) for c in comparison.costs],
        conventions=dict(comparison.conventions), headline_preset=headline_preset,
        headline_convention=headline_convention, energy_rows=energy, layer_energy_rows=layers,
        step_energy_rows=steps, sweep_rows=sweep, break_even_rows=breaks, layer_step_rows=layer_steps,
        verdict_rows=verdicts, layer_memory_rows=layer_mem, headline_memory=memory_of(headline_costs).spec,
        frontier=frontier,
        source=comparison.to_dict(),
    )

