"""The energy-quality frontier: per compared model its energy per image and its domain FID, and which models no
other beats on both.

A point is a model: x its energy per image under the headline convention and memory model (with the lowest and
highest total over every counting convention x memory model of the verdict matrix: how far another accounting
moves it), y the domain FID of its ``sdit evaluate --json`` record. Lower is better on both axes.

Pareto rule (exact comparisons, no tolerance): a model is dominated when another model of the same protocol costs
no more energy and has no higher FID, and is lower in at least one of the two. Two models with equal energy and
equal FID do not dominate each other: both stay on the front. A model without a FID or with an undefined headline
energy is on no front (``on_front`` is ``None`` and ``status`` says why).

FIDs measured under different protocols (feature network, reference images, sample count, sampler, steps, eta)
are not comparable: each protocol is a group with its own front, and the report draws the main group (the one of
most models). This module is pure data; :func:`profiling.compare.with_frontier` builds a :class:`Frontier` from a
comparison and the matched evaluation records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sdit.workload import Workload

FEATURES = "domain"  # the feature network whose FID the frontier plots (docs/quality.md)


@dataclass(frozen=True)
class Quality:
    """The domain sample quality of one model, as its ``sdit evaluate --json`` record gives it.

    ``fid`` and ``kid`` (with ``kid_standard_error``; ``None`` where the record has none) in the record's units;
    the rest is the protocol: the feature network (``features``, ``feature_network``, ``feature_sha256``), the
    reference images (``reference``, ``reference_sha256``), ``num_samples`` and the sampler.
    """

    fid: float
    kid: float | None
    kid_standard_error: float | None
    num_samples: int
    sampler: str
    method: str | None
    steps: int | None
    eta: float | None
    seed: int | None
    features: str
    feature_network: str
    feature_sha256: str
    reference: str
    reference_sha256: str
    source_file: str

    @property
    def protocol(self) -> str:
        """The protocol in words: FIDs of two models are comparable only where this is the same."""
        net = self.feature_network + (f" {self.feature_sha256[:12]}" if self.feature_sha256 else "")
        ref = self.reference + (f" {self.reference_sha256[:12]}" if self.reference_sha256 else "")
        return f"{self.features} features ({net}), N = {self.num_samples:,}, {self.sampler}, reference {ref}"

    @property
    def protocol_short(self) -> str:
        """The protocol as a figure's axis says it (the full one is in :attr:`protocol`)."""
        return f"{self.features} features, N = {self.num_samples:,}, {self.sampler}"

    def key(self) -> tuple[Any, ...]:
        """What must be equal for two FIDs to share a front."""
        return (self.features, self.feature_sha256 or self.feature_network, self.reference_sha256 or self.reference,
                self.num_samples, self.method or self.sampler, self.steps, self.eta)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Quality:
        return cls(**data)


def quality_of(record: dict[str, Any]) -> Quality | None:
    """The domain :class:`Quality` of an ``sdit evaluate --json`` record (checked by
    :func:`profiling.study.evaluation_problem`), or None where it holds no domain FID."""
    res = (record.get("results") or {}).get(FEATURES)
    if not isinstance(res, dict) or res.get("fid") is None:
        return None
    sampler = record.get("sampler") or {}
    net = res.get("feature_network") or {}
    ref = record.get("reference") or {}

    def number(value: Any) -> float | None:
        return None if value is None else float(value)

    return Quality(
        fid=float(res["fid"]), kid=number(res.get("kid")), kid_standard_error=number(res.get("kid_standard_error")),
        num_samples=int(record["num_samples"]), sampler=str(sampler.get("description", "?")),
        method=sampler.get("method"), steps=sampler.get("steps"), eta=number(sampler.get("eta")),
        seed=sampler.get("seed"), features=str(net.get("kind", FEATURES)),
        feature_network=str(net.get("name", "?")), feature_sha256=str(net.get("sha256", "")),
        reference=f"{ref.get('dataset', '?')} {ref.get('split', '?')} ({ref.get('selection', '?')})",
        reference_sha256=str(ref.get("images_sha256", "")), source_file=str(record.get("source_file", "")))


@dataclass(frozen=True)
class FrontierPoint:
    """One compared model on the frontier.

    Attributes:
        model: The target's name (preset or checkpoint path, as in the comparison).
        untrained: A preset's weights, never trained.
        energy_j: Joules per image under the frontier's headline convention and memory model (``None``: a term the
            preset needs is undefined).
        energy_min_j, energy_max_j: Lowest and highest defined total over every convention x memory model.
        min_at, max_at: Where each is reached (``convention, memory``).
        accountings: How many (convention, memory model) totals the range covers (defined ones).
        quality: Its domain FID record, or ``None``.
        group: Index of its protocol in :attr:`Frontier.protocols` (``None``: no FID).
        on_front: On the Pareto front of its group; ``None``: on no front (``status`` says why).
        dominated_by: The models of its group that dominate it.
        status: In words: ``on the front``, ``dominated by ...``, or why it is on no front.
    """

    model: str
    untrained: bool
    energy_j: float | None
    energy_min_j: float | None
    energy_max_j: float | None
    min_at: str
    max_at: str
    accountings: int
    quality: Quality | None = None
    group: int | None = None
    on_front: bool | None = None
    dominated_by: list[str] = field(default_factory=list)
    status: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "quality"}
        return {**out, "dominated_by": list(self.dominated_by),
                "quality": None if self.quality is None else self.quality.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrontierPoint:
        quality = data.get("quality")
        return cls(**{**data, "dominated_by": list(data["dominated_by"]),
                      "quality": None if quality is None else Quality.from_dict(quality)})


@dataclass(frozen=True)
class Frontier:
    """Energy against domain FID for every model of a comparison, and its Pareto fronts.

    Attributes:
        costs: The cost preset of every energy.
        convention: The headline counting convention of ``energy_j``.
        memory: The headline memory model (``MODEL:PRESET``, or ``none``: compute only).
        points: One per compared model, in the comparison's order.
        protocols: The FID protocols present, in words (:attr:`Quality.protocol`); a point's ``group`` indexes it.
        main: The protocol group the report draws (most models; ties: the first), ``None`` without any FID.
        sampler_note: Why the energies and the FIDs are not of one sampler run, when they are not
            (:func:`sampler_mismatch`); '' when they are, or without any FID.
    """

    costs: str
    convention: str
    memory: str
    points: list[FrontierPoint]
    protocols: list[str]
    main: int | None
    sampler_note: str = ""

    def point(self, model: str) -> FrontierPoint:
        for p in self.points:
            if p.model == model:
                return p
        raise KeyError(f"no model {model!r} on this frontier")

    def placed(self, group: int | None = None) -> list[FrontierPoint]:
        """The points of protocol ``group`` (default the main one) with a FID and a defined energy."""
        group = self.main if group is None else group
        return [p for p in self.points if p.group == group and p.on_front is not None]

    def front(self, group: int | None = None) -> list[FrontierPoint]:
        """The front of ``group`` (default the main one), by energy then FID: the order of its step line."""
        return sorted((p for p in self.placed(group) if p.on_front), key=lambda p: (p.energy_j, p.quality.fid))

    def to_dict(self) -> dict[str, Any]:
        return {"costs": self.costs, "convention": self.convention, "memory": self.memory,
                "points": [p.to_dict() for p in self.points], "protocols": list(self.protocols), "main": self.main,
                "sampler_note": self.sampler_note}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Frontier:
        return cls(costs=data["costs"], convention=data["convention"], memory=data["memory"],
                   points=[FrontierPoint.from_dict(p) for p in data["points"]], protocols=list(data["protocols"]),
                   main=data["main"], sampler_note=data.get("sampler_note", ""))


def sampler_mismatch(workload: Workload, frontier: Frontier) -> str:
    """Why ``frontier``'s energies (of ``workload``) and its main protocol's FIDs (of the samples their records drew)
    are not of one sampler, with the options that match them; '' when they are, or without any FID."""
    placed = frontier.placed()
    if not placed:
        return ""
    q = placed[0].quality
    same = (workload.kind == q.method and workload.steps == q.steps
            and (workload.kind != "ddim" or q.eta is None or workload.eta == q.eta))
    if same:
        return ""
    options = f"--method {q.method}" + (f" --sample-steps {q.steps}" if q.method != "ddpm" else "") + (
        f" --eta {q.eta:g}" if q.method == "ddim" and q.eta is not None else "")
    return (f"The energies are of {workload.label()}, the FIDs of samples drawn with {q.sampler}: not one sampler "
            f"(compare with {options} to count the sampler the FIDs measured).")


def pareto(points: Sequence[tuple[str, float, float]]) -> dict[str, list[str]]:
    """Name -> the names that dominate it (empty: on the front), for ``(name, energy, fid)`` points of one
    protocol. Lower is better on both; a point dominates another when it is no worse on both and better on at
    least one (exact comparisons: equal points dominate neither way)."""
    return {name: [other for other, e2, f2 in points if e2 <= e and f2 <= f and (e2 < e or f2 < f)]
            for name, e, f in points}


def build_frontier(energies: Sequence[FrontierPoint], quality: dict[str, Quality | None], costs: str,
                   convention: str, memory: str) -> Frontier:
    """The frontier of ``energies`` (points with their energies; quality, group and front unset) and each model's
    domain ``quality`` (model -> :class:`Quality` or ``None``). Pure."""
    keys: list[tuple[Any, ...]] = []
    protocols: list[str] = []
    staged = []
    for p in energies:
        q = quality.get(p.model)
        group = None
        if q is not None:
            if q.key() not in keys:
                keys.append(q.key())
                protocols.append(q.protocol)
            group = keys.index(q.key())
        staged.append(replace(p, quality=q, group=group, on_front=None, dominated_by=[], status=""))
    sizes = [sum(1 for p in staged if p.group == g and p.energy_j is not None) for g in range(len(keys))]
    main = max(range(len(keys)), key=lambda g: (sizes[g], -g)) if keys else None
    out = []
    dominated: dict[str, list[str]] = {}
    for g in range(len(keys)):
        dominated.update(pareto([(p.model, p.energy_j, p.quality.fid) for p in staged
                                 if p.group == g and p.energy_j is not None]))
    for p in staged:
        if p.quality is None:
            status = "no domain FID (no `sdit evaluate --json` record of its weights)"
            out.append(replace(p, status=status))
        elif p.energy_j is None:
            out.append(replace(p, status=f"energy undefined under {costs} ({convention}, memory {memory})"))
        else:
            by = dominated[p.model]
            other = "" if p.group == main else f"; another FID protocol ({protocols[p.group]}): a front of its own"
            status = ("on the front" if not by else "dominated by " + ", ".join(by)) + other
            out.append(replace(p, on_front=not by, dominated_by=by, status=status))
    return Frontier(costs=costs, convention=convention, memory=memory, points=out, protocols=protocols, main=main)
