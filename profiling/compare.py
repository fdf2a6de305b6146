"""The comparison study: two or more targets over one workload, estimated and (where a meter reads) measured.

:func:`compare` loads each target once, profiles the one :class:`~profiling.records.Workload`
on it, estimates its energy under every chosen cost preset and counting convention, measures
the same workload on a GPU when asked, and finds the break-even firing rate of every spiking
target against every ANN baseline under each preset and convention. The result, a
:class:`Comparison`, is pure data: reading it back (:meth:`Comparison.from_dict`) imports no
torch; only :func:`compare` itself needs the engine.

``Comparison.to_dict()`` schema (JSON-ready; :meth:`Comparison.from_dict` inverts it exactly)::

    {
      "schema": "sdit.comparison/3",
      "workload": {kind, timestep, steps, eta, batch_size, seed},       # Workload.to_dict()
      "costs": [EnergyCosts.to_dict(), ...],          # presets estimated, in order; each stored once here
                                                      # (its "memory": memory model and preset, or null)
      "conventions": {name: summary, ...},            # counting conventions estimated, in order
      "sweep_rates": [float, ...],                    # firing rates of every sweep
      "targets": [{
          "name": str,                                # preset name or checkpoint path, as given
          "source": str,                              # "preset", "checkpoint", "model" (passed in), "profile"
          "kind": "sdit" | "dit",
          "spiking": bool,                            # has spiking layers (else an ANN baseline)
          "params": {"trainable": int, "total": int},
          "profile": Profile.to_dict(),               # per layer, per step, per layer x step
          "estimates": [{"costs": preset name, "convention": name,
                         "estimate": Estimate.to_dict(),      # joules per image, per layer, per step;
                                                              # its preset by name
                         "sweep": [{"firing_rate", "energy_j"}, ...]}, ...],
          "measured": null | {                        # measured (GPU: NVML, CPU: RAPL), same workload
              "device", "meter" (one line: what was read), "method" ("counter" | "polling"), "images", "repeats",
              "window_s", "idle_power_w", "energy_j_per_image", "energy_above_idle_j_per_image",
              "energy_j_per_model_call", "time_s_per_image",
              "measurement": Measurement.to_dict()},  # the window; with "samples" [[t_s, watts], ...]
                                                      # (the power trace), "window_start_s", "window_end_s"
          "measured_reason": null | str               # why nothing was measured
      }, ...],
      "break_even": [{"model", "baseline", "costs", "convention",
                      "model_j", "baseline_j",        # totals per image under that preset/convention
                      "firing_rate": null | float,     # rate at which the model costs baseline_j
                      "reason": null | str}, ...],     # why firing_rate is null (also: no break-even in 0..1)
      "notes": {key: text},                           # what the columns and conventions mean
      "frontier": null | Frontier.to_dict()           # energy against domain FID per target and the Pareto
                                                      # fronts (profiling.frontier); absent in a comparison
                                                      # saved before it existed, read as null
    }

Energies are joules per image over the whole workload; ``None`` (JSON ``null``) where a preset
does not define a term the estimate needs (see ``estimate.undefined``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from profiling.conventions import COUNTING_CONVENTIONS, DEFAULT_CONVENTIONS, get_convention
from profiling.energy import (
    DEFAULT_COSTS,
    SWEEP_RATES,
    TERM_COLUMNS,
    EnergyCosts,
    Estimate,
    break_even,
    estimate,
    load_costs,
    memory_of,
    with_memory,
)
from profiling.frontier import Frontier, FrontierPoint, Quality, build_frontier, quality_of, sampler_mismatch
from profiling.memory import MEMORY_MODELS
from profiling.records import Profile
from sdit.workload import Workload

SCHEMA = "sdit.comparison/3"
OLDER_READERS = {"sdit.comparison/1": "sdit 0.1.0 (comparisons of schema sdit.comparison/1)",
                 "sdit.comparison/2": "sdit 0.2.0 (comparisons without memory models, schema sdit.comparison/2)"}
OLDER_READER = OLDER_READERS["sdit.comparison/1"]
NOT_REQUESTED = "not requested (pass --measure)"
MEASURE_FAILED = "measurement failed: "  # prefix of measured_reason when the meter failed mid-window


@dataclass(frozen=True)
class TargetEstimate:
    """One target's energy under one preset and one convention, with its firing-rate sweep."""

    costs: str
    convention: str
    estimate: Estimate
    sweep: list[dict[str, float | None]]

    def to_dict(self) -> dict[str, Any]:
        return {"costs": self.costs, "convention": self.convention, "estimate": self.estimate.to_dict(),
                "sweep": self.sweep}

    @classmethod
    def from_dict(cls, data: dict[str, Any], costs: dict[str, EnergyCosts]) -> TargetEstimate:
        return cls(costs=data["costs"], convention=data["convention"],
                   estimate=Estimate.from_dict(data["estimate"], costs), sweep=data["sweep"])


@dataclass(frozen=True)
class TargetResult:
    """Everything the study found about one target (``params`` values ``None``: not known, a study of
    profiles alone)."""

    name: str
    source: str
    kind: str
    spiking: bool
    params: dict[str, int | None]
    profile: Profile
    estimates: list[TargetEstimate]
    measured: dict[str, Any] | None
    measured_reason: str | None

    def estimate(self, costs: str, convention: str) -> Estimate:
        """The estimate under preset ``costs`` and ``convention``."""
        for e in self.estimates:
            if e.costs == costs and e.convention == convention:
                return e.estimate
        raise KeyError(f"{self.name}: no estimate for costs {costs!r} and convention {convention!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "kind": self.kind, "spiking": self.spiking,
                "params": dict(self.params), "profile": self.profile.to_dict(),
                "estimates": [e.to_dict() for e in self.estimates], "measured": self.measured,
                "measured_reason": self.measured_reason}

    @classmethod
    def from_dict(cls, data: dict[str, Any], costs: dict[str, EnergyCosts]) -> TargetResult:
        return cls(name=data["name"], source=data["source"], kind=data["kind"], spiking=data["spiking"],
                   params=dict(data["params"]), profile=Profile.from_dict(data["profile"]),
                   estimates=[TargetEstimate.from_dict(e, costs) for e in data["estimates"]],
                   measured=data["measured"], measured_reason=data["measured_reason"])


@dataclass(frozen=True)
class BreakEven:
    """The firing rate at which a spiking model costs what an ANN baseline costs, per image."""

    model: str
    baseline: str
    costs: str
    convention: str
    model_j: float | None
    baseline_j: float | None
    firing_rate: float | None
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BreakEven:
        return cls(**data)


@dataclass(frozen=True)
class Comparison:
    """Two or more targets over one workload; see the module docstring for the dict schema."""

    workload: Workload
    costs: list[EnergyCosts]
    conventions: dict[str, str]
    sweep_rates: list[float]
    targets: list[TargetResult]
    break_even: list[BreakEven]
    notes: dict[str, str]
    frontier: Frontier | None = None

    def target(self, name: str) -> TargetResult:
        for t in self.targets:
            if t.name == name:
                return t
        raise KeyError(f"no target named {name!r} in this comparison")

    def break_even_of(self, model: str, baseline: str, costs: str, convention: str) -> BreakEven:
        for b in self.break_even:
            if (b.model, b.baseline, b.costs, b.convention) == (model, baseline, costs, convention):
                return b
        raise KeyError(f"no break-even for {model} vs {baseline} under {costs}, {convention}")

    def frame(self) -> Any:
        """One row per target, cost preset and convention (index ``model``, ``costs``, ``convention``): the mean
        ``firing_rate`` (fraction; <NA> for an ANN), energy per image in microjoules by term (``mac_uj`` ...
        ``total_uj``, <NA> where undefined), ``macs`` / ``acs`` as the convention charges them, and ``ratio`` of
        ``total_uj`` to the first ANN baseline's under the same preset and convention (docs/api.md)."""
        import pandas as pd

        base = next((t for t in self.targets if not t.spiking), None)
        rows = []
        for t in self.targets:
            for te in t.estimates:
                est = te.estimate
                base_j = base.estimate(te.costs, te.convention).total_j if base is not None else None
                rows.append({"model": t.name, "costs": te.costs, "convention": te.convention, "memory": est.memory,
                             "firing_rate": t.profile.mean_firing_rate,
                             **{c.removesuffix("_j") + "_uj": _uj(est.per_image[c]) for c in TERM_COLUMNS},
                             "macs": est.counts["macs"], "acs": est.counts["acs"],
                             "ratio": est.total_j / base_j if est.total_j is not None and base_j else None})
        frame = pd.DataFrame(rows).set_index(["model", "costs", "convention"])
        for column in frame.columns:
            frame[column] = frame[column].astype("string" if column == "memory" else "Float64")
        frame.attrs.update(workload=self.workload.label(), baseline=None if base is None else base.name,
                           unit="microjoules per image over the workload; firing_rate a fraction")
        return frame

    def break_even_frame(self) -> Any:
        """One row per spiking model, ANN baseline, preset and convention: the ``break_even_firing_rate``
        (fraction; <NA> with ``reason`` where there is none in [0, 1]) and both totals in microjoules."""
        import pandas as pd

        rows = [{"model": b.model, "baseline": b.baseline, "costs": b.costs, "convention": b.convention,
                 "break_even_firing_rate": b.firing_rate, "reason": b.reason,
                 "model_uj": _uj(b.model_j), "baseline_uj": _uj(b.baseline_j)} for b in self.break_even]
        frame = pd.DataFrame(rows, columns=["model", "baseline", "costs", "convention", "break_even_firing_rate",
                                            "reason", "model_uj", "baseline_uj"])
        for column in ("break_even_firing_rate", "model_uj", "baseline_uj"):
            frame[column] = frame[column].astype("Float64")
        for column in ("model", "baseline", "costs", "convention", "reason"):
            frame[column] = frame[column].astype("string")
        return frame

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "workload": self.workload.to_dict(), "costs": [c.to_dict() for c in self.costs],
                "conventions": dict(self.conventions), "sweep_rates": list(self.sweep_rates),
                "targets": [t.to_dict() for t in self.targets], "break_even": [b.to_dict() for b in self.break_even],
                "notes": dict(self.notes), "frontier": None if self.frontier is None else self.frontier.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Comparison:
        """The inverse of :meth:`to_dict`.

        Raises:
            ValueError: not a comparison of this schema (an older one names the sdit that reads it).
        """
        schema = data.get("schema")
        if schema in OLDER_READERS:
            raise ValueError(f"a comparison of schema {schema!r}, not {SCHEMA!r}: it is read by "
                             f"{OLDER_READERS[schema]}")
        if schema != SCHEMA:
            raise ValueError(f"not an sdit comparison (schema {schema!r}, expected {SCHEMA!r})")
        costs = [EnergyCosts.from_dict(c) for c in data["costs"]]
        by_name = {c.name: c for c in costs}
        return cls(workload=Workload.from_dict(data["workload"]), costs=costs,
                   conventions=dict(data["conventions"]), sweep_rates=list(data["sweep_rates"]),
                   targets=[TargetResult.from_dict(t, by_name) for t in data["targets"]],
                   break_even=[BreakEven.from_dict(b) for b in data["break_even"]], notes=dict(data["notes"]),
                   frontier=None if data.get("frontier") is None else Frontier.from_dict(data["frontier"]))


def _uj(joules: float | None) -> float | None:
    return None if joules is None else joules * 1e6


def estimate_target(profile: Profile, costs: Sequence[EnergyCosts], conventions: Sequence[str],
                    sweep_rates: Sequence[float]) -> list[TargetEstimate]:
    """Estimates of ``profile`` under every preset x convention (pure)."""
    out = []
    for c in costs:
        for name in conventions:
            result = estimate(profile, c, name)
            out.append(TargetEstimate(costs=c.name, convention=name, estimate=result,
                                      sweep=result.sweep(list(sweep_rates))))
    return out


def break_evens(targets: Sequence[TargetResult], costs: Sequence[EnergyCosts],
                conventions: Sequence[str]) -> list[BreakEven]:
    """Every spiking target against every ANN baseline, under each preset and convention (pure).

    The baseline is an ANN, whose cost every convention counts alike; its strict total is used.
    """
    out = []
    for model in (t for t in targets if t.spiking):
        for base in (t for t in targets if not t.spiking):
            for c in costs:
                base_j = base.estimate(c.name, conventions[0]).total_j
                for name in conventions:
                    est = model.estimate(c.name, name)
                    rate, reason = break_even(est, base_j)
                    if rate is None and (base_j is None or est.energy_at_rate_j(0.0) is None):
                        undefined = sorted({*est.undefined.values(),
                                            *base.estimate(c.name, conventions[0]).undefined.values()})
                        reason = f"a term the totals need is {' / '.join(undefined) or 'undefined'}"
                    out.append(BreakEven(model=model.name, baseline=base.name, costs=c.name, convention=name,
                                         model_j=est.total_j, baseline_j=base_j, firing_rate=rate, reason=reason))
    return out


@dataclass(frozen=True)
class Verdict:
    """One cell of the verdict matrix: a spiking model against an ANN baseline under one counting convention
    and one memory model (at one cost preset), joules per image.

    ``ratio`` is model / baseline (``None`` where a total is undefined); ``break_even`` the firing rate in
    [0, 1] at which they cost the same, else ``None`` and ``break_even_text`` says why in words."""

    model: str
    baseline: str
    costs: str
    convention: str
    memory: str
    model_j: float | None
    baseline_j: float | None
    memory_j: float | None
    ratio: float | None
    break_even: float | None
    break_even_text: str
    unassigned: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def verdict_matrix(comparison: Comparison, costs: EnergyCosts | None = None,
                   conventions: Sequence[str] | None = None,
                   memories: Sequence[str] | None = None) -> list[Verdict]:
    """The verdict of every spiking target against every ANN baseline of ``comparison``, counting convention x
    memory model, at ``costs`` (default: the comparison's first preset). Pure: estimates from the stored profiles.

    Args:
        memories: Memory specs (``MODEL[:PRESET]``); default :func:`memory_specs` (every memory model, the
            preset's own in its place; ``none`` alone for an all-in preset).

    Rows are ordered by model, baseline, convention, then memory model; ``unassigned`` counts the layers of
    model and baseline whose memory the model cannot assign (listed in each estimate's ``unassigned``).
    """
    base_costs = costs or comparison.costs[0]
    names = list(conventions or comparison.conventions)
    priced = [with_memory(base_costs, spec) for spec in memory_specs(base_costs, memories)]
    out = []
    for model in (t for t in comparison.targets if t.spiking):
        for base in (t for t in comparison.targets if not t.spiking):
            base_estimates = {c.name: estimate(base.profile, c, "strict") for c in priced}  # an ANN: any convention
            base_totals = {k: e.total_j for k, e in base_estimates.items()}
            base_unassigned = {k: len(e.unassigned) for k, e in base_estimates.items()}
            for name in names:
                for c in priced:
                    est = estimate(model.profile, c, name)
                    base_j = base_totals[c.name]
                    rate, reason = break_even(est, base_j)
                    text = f"{rate:.2%}" if rate is not None else str(reason)
                    ratio = est.total_j / base_j if est.total_j is not None and base_j else None
                    unassigned = len(est.unassigned) + base_unassigned[c.name]
                    out.append(Verdict(model=model.name, baseline=base.name, costs=c.name, convention=name,
                                       memory=est.memory, model_j=est.total_j, baseline_j=base_j,
                                       memory_j=est.per_image["memory_j"], ratio=ratio, break_even=rate,
                                       break_even_text=text, unassigned=unassigned))
    return out


def memory_specs(costs: EnergyCosts, memories: Sequence[str] | None = None) -> list[str]:
    """The memory specs a verdict matrix at ``costs`` shows: ``memories``, else every model of
    :data:`profiling.memory.MEMORY_MODELS` at its default preset, the preset's own memory model and preset in
    its place where it has one. An all-in preset takes no memory term: ``none`` alone."""
    if costs.scope == "all-in":
        return ["none"]
    if memories is not None:
        return list(memories)
    own = costs.memory
    return [own if own and own.split(":")[0] == m else m for m in MEMORY_MODELS]


def energy_range(profile: Profile, costs: EnergyCosts, conventions: Sequence[str],
                 memories: Sequence[str] | None = None) -> dict[tuple[str, str], float | None]:
    """``(convention, memory spec)`` -> joules per image of ``profile`` at ``costs``, for every convention and
    every memory spec of the verdict matrix (:func:`memory_specs`); ``None`` where a term is undefined. Pure."""
    priced = [with_memory(costs, spec) for spec in memory_specs(costs, memories)]
    out = {}
    for name in conventions:
        for priced_costs in priced:
            est = estimate(profile, priced_costs, name)
            out[name, est.memory] = est.total_j
    return out


def frontier_points(comparison: Comparison, costs: EnergyCosts | None = None,
                    convention: str | None = None) -> list[FrontierPoint]:
    """Each target's energy per image under ``costs`` (default the first preset) with its own memory model and
    ``convention`` (default the first), and its range over every convention x memory model of the verdict
    matrix (quality and fronts unset: :func:`profiling.frontier.build_frontier`). Pure."""
    costs = costs or comparison.costs[0]
    convention = convention or next(iter(comparison.conventions))
    out = []
    for t in comparison.targets:
        head = estimate(t.profile, costs, convention).total_j
        totals = {k: v for k, v in energy_range(t.profile, costs, list(comparison.conventions)).items()
                  if v is not None}
        low = min(totals, key=totals.__getitem__) if totals else None
        high = max(totals, key=totals.__getitem__) if totals else None
        out.append(FrontierPoint(
            model=t.name, untrained=t.source == "preset", energy_j=head,
            energy_min_j=None if low is None else totals[low], energy_max_j=None if high is None else totals[high],
            min_at=_where(low, t.spiking), max_at=_where(high, t.spiking), accountings=len(totals)))
    return out


def _where(key: tuple[str, str] | None, spiking: bool) -> str:
    """Where an energy of the range is reached, in words: ``convention, memory model`` (an ANN costs the same
    under every convention: its memory model alone)."""
    if key is None:
        return ""
    memory = key[1].split(":")[0]
    return f"{key[0]}, {memory}" if spiking else f"{memory} (every convention)"


def with_frontier(comparison: Comparison, evaluations: dict[str, list[dict[str, Any]]],
                  saved: Sequence[Frontier] = ()) -> Comparison:
    """``comparison`` with its :class:`~profiling.frontier.Frontier` at its first preset and first convention:
    each target's domain FID from its matched ``sdit evaluate --json`` records (``evaluations``: target name ->
    records, :func:`profiling.study.match_evaluations`), else from the frontier ``comparison`` carries or one of
    ``saved`` (a study read back whose target cannot be found here to match its records again). Pure."""
    costs = comparison.costs[0]
    convention = next(iter(comparison.conventions))
    earlier: dict[str, Quality | None] = {}
    for frontier in [*saved, *([comparison.frontier] if comparison.frontier else [])]:
        earlier.update({p.model: p.quality for p in frontier.points if p.quality is not None})
    quality: dict[str, Quality | None] = {}
    for t in comparison.targets:
        found = [q for q in map(quality_of, evaluations.get(t.name, [])) if q is not None]
        quality[t.name] = found[0] if found else earlier.get(t.name)
    memory = memory_of(costs).spec
    frontier = build_frontier(frontier_points(comparison, costs, convention), quality, costs.name, convention, memory)
    return replace(comparison, frontier=replace(frontier, sampler_note=sampler_mismatch(comparison.workload, frontier)))


def layer_memory(profile: Profile, costs: EnergyCosts, convention: str,
                 memories: Sequence[str] | None = None) -> dict[str, dict[str, dict[str, float | None]]]:
    """Per memory spec (:func:`memory_specs`), layer -> ``compute_j`` and ``memory_j`` per image of ``profile``
    under ``convention`` at ``costs`` (``memory_j`` ``None`` for ``none``, and for a layer the model cannot assign
    and charges nothing: listed in the estimate's ``unassigned``, never shown as 0). Pure."""
    out = {}
    for spec in memory_specs(costs, memories):
        est = estimate(profile, with_memory(costs, spec), convention)
        out[est.memory] = {name: {"compute_j": e["compute_j"],
                                  "memory_j": None if name in est.unassigned and not e["memory_j"] else e["memory_j"]}
                           for name, e in est.layers.items()}
    return out


def _params(model: Any) -> dict[str, int]:
    params = list(model.parameters())
    return {"trainable": sum(p.numel() for p in params if p.requires_grad), "total": sum(p.numel() for p in params)}


def _notes() -> dict[str, str]:
    notes = {"unit": "joules per image over the whole workload (energy); counts per image",
             "conventions": "what each counting convention charges: see 'conventions'; each target's profile "
                            "says what its count columns mean"}
    notes["baseline"] = "an ANN baseline costs the same under every convention (no spikes); its strict total is used"
    notes["measured"] = ("energy the meter reads (NVML: the whole GPU; RAPL: the CPU packages, no DRAM) over the "
                         "same workload, repeated to fill the window, idle draw included; above-idle figures "
                         "subtract idle power x window time")
    return notes


def _comparison(workload: Workload, costs: list[EnergyCosts], conventions: Sequence[str],
                sweep_rates: Sequence[float], targets: list[TargetResult]) -> Comparison:
    return Comparison(
        workload=workload, costs=costs, conventions={n: COUNTING_CONVENTIONS[n].summary for n in conventions},
        sweep_rates=list(sweep_rates), targets=targets, break_even=break_evens(targets, costs, list(conventions)),
        notes=_notes())


def compare_profiles(
    profiles: Sequence[Profile],
    costs: Sequence[EnergyCosts],
    conventions: Sequence[str] = DEFAULT_CONVENTIONS,
    sweep_rates: Sequence[float] = SWEEP_RATES,
) -> Comparison:
    """The study of profiles already made (of one workload; parameters unknown, nothing measured). Pure.

    Raises:
        ValueError: no profile, or profiles of different workloads.
        profiling.conventions.ConventionError: an unknown convention.
    """
    if not profiles:
        raise ValueError("a study needs at least one profile")
    workloads = {p.workload for p in profiles}
    if len(workloads) != 1:
        raise ValueError("the models were profiled on different workloads: "
                         + "; ".join(sorted(w.label() for w in workloads)))
    cost_list = list(costs)
    targets = [TargetResult(name=p.model, source="profile", kind=p.kind, spiking=p.is_spiking,
                            params={"trainable": None, "total": None}, profile=p,
                            estimates=estimate_target(p, cost_list, conventions, sweep_rates),
                            measured=None, measured_reason=NOT_REQUESTED) for p in profiles]
    return _comparison(profiles[0].workload, cost_list, conventions, sweep_rates, targets)


Loaded = tuple[str, Any]  # (name, nn.Module), for models the caller already has


def compare(
    targets: Sequence[str | Loaded],
    workload: Workload,
    *,
    costs: Sequence[str | EnergyCosts] = (DEFAULT_COSTS,),
    conventions: Sequence[str] = DEFAULT_CONVENTIONS,
    measure: bool = False,
    device: str = "cuda:0",
    min_window_s: float = 1.0,
    idle_s: float = 5.0,
    strict: bool = False,
    sweep_rates: Sequence[float] = SWEEP_RATES,
    meter_factory: Callable[[str], Any] | None = None,
    meter_kind: str = "auto",
    progress: Callable[[str], None] | None = None,
) -> Comparison:
    """Run the study: profile, estimate and (with ``measure``) measure ``workload`` on every target.

    Args:
        targets: Preset names or checkpoint paths (each loaded once, on the CPU),
            :class:`sdit.targets.Target` objects, or ``(name, model)`` pairs. Spiking targets
            are compared with every ANN among them.
        workload: The one workload profiled, estimated and measured.
        costs: Cost presets (names or :class:`EnergyCosts`).
        conventions: Counting conventions, by name (the first one is the baseline's).
        measure: Also measure the workload's energy on ``device``, every target (baselines
            included) with one meter and one idle reading; where no meter reads,
            ``measured`` is ``None`` and ``measured_reason`` says why.
        meter_factory: ``device -> PowerMeter`` (tests pass a fake); default
            :func:`profiling.meters.make_meter` with ``kind=meter_kind``.
        meter_kind: Which meter :func:`profiling.meters.make_meter` picks: ``auto`` (NVML
            on a GPU, RAPL on the CPU), ``nvml`` or ``cpu`` (RAPL CPU packages).
        progress: Called with a line of text before each long step.

    Raises:
        profiling.energy.CostsError, profiling.conventions.ConventionError: bad presets / conventions.
        sdit.targets.TargetError, ValueError: a target that cannot be loaded.

    A meter that fails mid-measurement does not raise: that target's ``measured`` is ``None``
    and its ``measured_reason`` starts with :data:`MEASURE_FAILED`.
    """
    from profiling.meters import MeterError
    from profiling.workloads import profile_workload  # the engine (torch) only when running a study
    from sdit.targets import load_target

    if len(targets) < 1:
        raise ValueError("compare needs at least one target")
    for name in conventions:  # before any work
        get_convention(name)
    cost_list = [c if isinstance(c, EnergyCosts) else load_costs(c) for c in costs]
    say = progress or (lambda _line: None)
    meter = None
    results: list[TargetResult] = []
    try:
        for spec in targets:
            if isinstance(spec, str):
                say(f"loading {spec}")
                loaded = load_target(spec)
                name, model, source = spec, loaded.model, loaded.source
            elif hasattr(spec, "model"):  # an sdit.targets.Target the caller loaded
                name, model, source = spec.label, spec.model, spec.source
            else:
                name, model = spec
                source = "model"
            say(f"profiling {name}: {workload.label()}")
            profile = profile_workload(model, workload, name=name, strict=strict)
            measured, reason = None, NOT_REQUESTED
            if measure:
                if meter is None:
                    from profiling.meters import make_meter

                    meter = meter_factory(device) if meter_factory else make_meter(device, kind=meter_kind)
                if not meter.available:
                    reason = meter.reason
                else:
                    say(f"measuring {name} on {device}: {workload.label()}")
                    try:
                        measured, reason = _measure(model, workload, meter, device, min_window_s, idle_s), None
                    except MeterError as err:
                        reason = f"{MEASURE_FAILED}{err}"
            results.append(TargetResult(
                name=name, source=source, kind=profile.kind, spiking=profile.is_spiking, params=_params(model),
                profile=profile, estimates=estimate_target(profile, cost_list, conventions, sweep_rates),
                measured=measured, measured_reason=reason,
            ))
    finally:
        if meter is not None:
            meter.close()
    return _comparison(workload, cost_list, conventions, sweep_rates, results)


def _measure(model: Any, workload: Workload, meter: Any, device: str, min_window_s: float,
             idle_s: float) -> dict[str, Any]:
    """Measure ``workload`` on ``device`` with the model moved there, then moved back."""
    from profiling.measure import measure_workload

    home = next(model.parameters()).device
    model.to(device)
    try:
        result = measure_workload(model, workload, meter, min_window_s=min_window_s, idle_s=idle_s)
    finally:
        model.to(home)
    return {"device": device, "meter": meter.description, **result.to_dict()}
