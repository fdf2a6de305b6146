"""The paper's Table III beside our models, under every counting convention its figures could mean.

Table III of the SDiT paper gives DiT 13.86 M parameters / 3.48 G MACs and SDiT 11.67 M / 1.32 G, without
saying how it counted. :func:`table3` profiles one forward of each compared model (the profiler of
:mod:`profiling.workloads`, batch 1) and recomputes its count under each reading:

* all T steps / one T step: a spiking block's synaptic ops counted for each of the T spiking steps, or
  once. In our ``time_encoding="stream"`` SDiT the blocks run T times (the profile is "all T"); in the
  authors' ``"branch"`` layout they run once (the profile is "one T", and "all T" is T times it).
* dense (every matmul and conv) or Linear/Conv only (without DiT's attention matmuls q k^T and A v).
* MACs, or FLOPs = 2 x MACs.
* firing-rate weighted: the spike-fed ops (:func:`profiling.conventions.spike_fed`: inside a spiking
  block and reached by a neuron's spikes, what the paper convention charges at a rate) count fr x their
  MACs, the rest in full; the table gives the firing rate fr each model would need to reach the paper's
  figure (a fitted rate, not a reproduction).

A figure is *reproduced* by a convention when the count rounds to the figure as printed (3.48 G: within
0.005 G). Pure data out (:class:`Table3`, JSON-ready); rendering lives in :mod:`reports.table3`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from profiling.conventions import spike_fed_macs
from profiling.records import Profile

if TYPE_CHECKING:
    from torch import nn

SYNAPTIC_MODULES = ("Linear", "Conv2d", "Conv1d", "NonDynamicallyQuantizableLinear")


@dataclass(frozen=True)
class PaperFigure:
    """One row of the paper's Table III.

    Attributes:
        model: ``DiT`` or ``SDiT``.
        params: Parameters as printed, and their value.
        macs: "MACs" as printed, and their value.
        compare: Roles of our models it is compared with (keys of ``models`` in :func:`table3`).
    """

    model: str
    params_printed: str
    params: float
    params_tolerance: float
    macs_printed: str
    macs: float
    macs_tolerance: float
    compare: tuple[str, ...]


PAPER_TABLE3 = (
    PaperFigure("DiT", "13.86 M", 13.86e6, 0.005e6, "3.48 G", 3.48e9, 0.005e9, ("dit",)),
    PaperFigure("SDiT", "11.67 M", 11.67e6, 0.005e6, "1.32 G", 1.32e9, 0.005e9, ("sdit", "sdit_authors")),
)
# What the paper leaves open about its figures (the report prints it under its Table III rows).
PAPER_TABLE3_NOTE = (
    "the paper prints " + " and ".join(f"{f.params_printed} / {f.macs_printed} ({f.model})" for f in PAPER_TABLE3)
    + " for its MNIST models without saying what a MAC counts; DiT's 3.48 G equals twice its Linear/Conv MACs "
    "(a FLOP count or a batch of two); the paper gives no workload, ACs or energy"
)
DEFAULT_MODELS = {"dit": "dit-mnist", "sdit": "sdit-mnist", "sdit_authors": "sdit-mnist-authors"}


@dataclass(frozen=True)
class Convention:
    """A way to count "MACs per image".

    Attributes:
        key: JSON key.
        label: Short label (<= 30 characters, the terminal's first column).
        unit: ``MACs``, ``FLOPs`` or ``firing rate`` (the fr conventions give the rate needed).
        description: What is counted.
    """

    key: str
    label: str
    unit: str
    description: str


CONVENTIONS = (
    Convention("dense_all_t", "dense MACs, all T steps", "MACs",
               "every matmul and conv (incl. attention matmuls), spiking blocks counted for each of T steps"),
    Convention("dense_one_t", "dense MACs, one T step", "MACs", "as above, spiking blocks counted once"),
    Convention("linconv_all_t", "Linear/Conv MACs, all T", "MACs",
               "Linear and Conv layers only (no attention matmuls), all T steps"),
    Convention("linconv_one_t", "Linear/Conv MACs, one T", "MACs", "Linear and Conv layers only, one T step"),
    Convention("flops_dense_all_t", "FLOPs (2x) dense, all T", "FLOPs", "2 x dense MACs, all T steps"),
    Convention("flops_dense_one_t", "FLOPs (2x) dense, one T", "FLOPs", "2 x dense MACs, one T step"),
    Convention("flops_linconv_all_t", "FLOPs (2x) Linear/Conv, all T", "FLOPs", "2 x Linear/Conv MACs, all T"),
    Convention("flops_linconv_one_t", "FLOPs (2x) Linear/Conv, one T", "FLOPs", "2 x Linear/Conv MACs, one T"),
    Convention("fr_all_t", "fr-weighted MACs, all T", "firing rate",
               "non-spiking MACs + fr x spiking MACs (all T): the fr that gives the paper's figure"),
    Convention("fr_one_t", "fr-weighted MACs, one T", "firing rate",
               "non-spiking MACs + fr x spiking MACs (one T): the fr that gives the paper's figure"),
    Convention("fr_flops_all_t", "fr-weighted FLOPs, all T", "firing rate",
               "2 x (non-spiking MACs + fr x spiking MACs), all T: the fr that gives the paper's figure"),
    Convention("fr_flops_one_t", "fr-weighted FLOPs, one T", "firing rate",
               "2 x (non-spiking MACs + fr x spiking MACs), one T: the fr that gives the paper's figure"),
)
COUNT_CONVENTIONS = tuple(c for c in CONVENTIONS if c.unit != "firing rate")
RATE_CONVENTIONS = tuple(c for c in CONVENTIONS if c.unit == "firing rate")


@dataclass(frozen=True)
class ModelCounts:
    """One compared model under every convention, per image.

    Attributes:
        role: ``dit``, ``sdit`` or ``sdit_authors``.
        name: Preset or checkpoint.
        time_steps: T (0 for an ANN).
        time_encoding: ``none`` (ANN), ``stream`` (blocks run T times) or ``branch`` (blocks run once).
        counts: Convention key -> MACs or FLOPs per image (exact integers).
        spiking_macs_all_t, nonspiking_macs_all_t: The split the fr conventions use (MACs, all T).
        needed_rates: fr convention key -> firing rate reaching the paper's MACs figure (None: no spiking ops).
        strict_macs, strict_acs: The profiler's strict count of the forward as run.
    """

    role: str
    name: str
    trainable_params: int
    params: int
    time_steps: int
    time_encoding: str
    counts: dict[str, int]
    spiking_macs_all_t: int
    nonspiking_macs_all_t: int
    spiking_macs_one_t: int
    nonspiking_macs_one_t: int
    needed_rates: dict[str, float | None]
    strict_macs: int
    strict_acs: int


@dataclass(frozen=True)
class Match:
    """A convention's count against a paper figure."""

    convention: str
    value: float
    rel_error: float  # (value - paper) / paper
    reproduces: bool  # rounds to the printed figure


@dataclass(frozen=True)
class Finding:
    """Which convention reproduces one paper figure for one of our models, and how closely.

    Attributes:
        figure: ``"DiT MACs"`` etc.
        printed: The figure as printed.
        role, name: Our model.
        matches: Every count convention (params: trainable and total), closest first.
        fitted_rates: fr convention -> the rate that reaches the figure (SDiT only).
        summary: One sentence.
    """

    figure: str
    printed: str
    role: str
    name: str
    matches: list[Match]
    fitted_rates: dict[str, float | None]
    summary: str


@dataclass(frozen=True)
class Table3:
    """The paper's Table III, our models' counts, and what reproduces what."""

    paper: list[PaperFigure]
    conventions: list[Convention]
    models: list[ModelCounts]
    findings: list[Finding]
    workload: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def model(self, role: str) -> ModelCounts:
        return next(m for m in self.models if m.role == role)


def spiking_block_prefixes(model: nn.Module) -> list[str]:
    """Names of the modules that hold a spiking neuron as a direct child (SDiT's blocks)."""
    from profiling.module_rules import KNOWN_NEURONS

    return [name for name, module in model.named_modules()
            if name and any(isinstance(c, KNOWN_NEURONS) for c in module.children())]


def count_conventions(profile: Profile, model: nn.Module) -> dict[str, int]:
    """Every count convention of :data:`COUNT_CONVENTIONS`, plus the spiking / non-spiking splits, from a
    one-forward profile of ``model`` (per image, exact)."""
    cfg = model.config
    spiking = getattr(cfg, "kind", "") == "sdit"
    steps = int(cfg.time_steps) if spiking else 1
    runs = steps if spiking and getattr(cfg, "time_encoding", "stream") == "stream" else 1
    prefixes = tuple(p + "." for p in spiking_block_prefixes(model))
    totals = dict.fromkeys(("dense_all", "dense_one", "lin_all", "lin_one", "spk_all", "spk_one",
                            "non_all", "non_one"), 0)
    fed = spike_fed_macs(profile)
    for layer in profile.layers:
        dense = int(layer.dense_macs)
        if not dense:
            continue
        in_block = layer.name.startswith(prefixes)
        # per-layer MACs as counted once per T step, and over all T steps
        one, every = (dense // runs, dense * steps // runs) if in_block else (dense, dense)
        spk = int(fed[layer.name])
        spk_one, spk_all = (spk // runs, spk * steps // runs) if in_block else (spk, spk)
        totals["dense_all"] += every
        totals["dense_one"] += one
        if layer.kind in SYNAPTIC_MODULES:
            totals["lin_all"] += every
            totals["lin_one"] += one
        totals["spk_all"] += spk_all
        totals["spk_one"] += spk_one
        totals["non_all"] += every - spk_all
        totals["non_one"] += one - spk_one
    return {
        "dense_all_t": totals["dense_all"], "dense_one_t": totals["dense_one"],
        "linconv_all_t": totals["lin_all"], "linconv_one_t": totals["lin_one"],
        "flops_dense_all_t": 2 * totals["dense_all"], "flops_dense_one_t": 2 * totals["dense_one"],
        "flops_linconv_all_t": 2 * totals["lin_all"], "flops_linconv_one_t": 2 * totals["lin_one"],
        "_spiking_all_t": totals["spk_all"], "_spiking_one_t": totals["spk_one"],
        "_nonspiking_all_t": totals["non_all"], "_nonspiking_one_t": totals["non_one"],
    }


def _needed_rate(target: float, nonspiking: int, spiking: int) -> float | None:
    return None if spiking == 0 else (target - nonspiking) / spiking


def model_counts(role: str, name: str, model: nn.Module, paper_macs: float, timestep: int = 500) -> ModelCounts:
    """Profile one forward of ``model`` (batch 1) and count it under every convention."""
    from profiling.workloads import profile_forward  # the engine (torch) only when counting

    profile = profile_forward(model, name=name, timestep=timestep)
    counts = count_conventions(profile, model)
    split = {k: counts.pop(k) for k in [k for k in counts if k.startswith("_")]}
    cfg = model.config
    spiking = cfg.kind == "sdit"
    rates = {
        "fr_all_t": _needed_rate(paper_macs, split["_nonspiking_all_t"], split["_spiking_all_t"]),
        "fr_one_t": _needed_rate(paper_macs, split["_nonspiking_one_t"], split["_spiking_one_t"]),
        "fr_flops_all_t": _needed_rate(paper_macs / 2, split["_nonspiking_all_t"], split["_spiking_all_t"]),
        "fr_flops_one_t": _needed_rate(paper_macs / 2, split["_nonspiking_one_t"], split["_spiking_one_t"]),
    }
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return ModelCounts(
        role=role, name=name, trainable_params=trainable, params=params,
        time_steps=int(cfg.time_steps) if spiking else 0,
        time_encoding=cfg.time_encoding if spiking else "none",
        counts=counts,
        spiking_macs_all_t=split["_spiking_all_t"], nonspiking_macs_all_t=split["_nonspiking_all_t"],
        spiking_macs_one_t=split["_spiking_one_t"], nonspiking_macs_one_t=split["_nonspiking_one_t"],
        needed_rates=rates, strict_macs=int(profile.per_image["macs"]), strict_acs=int(profile.per_image["acs"]),
    )


def _matches(values: dict[str, float], paper: float, tolerance: float) -> list[Match]:
    found = [Match(k, v, (v - paper) / paper, abs(v - paper) <= tolerance) for k, v in values.items()]
    return sorted(found, key=lambda m: abs(m.rel_error))


def _labels() -> dict[str, str]:
    return {c.key: c.label for c in CONVENTIONS} | {"trainable": "trainable params", "total": "total params"}


def _summary(figure: str, printed: str, name: str, matches: list[Match], rates: dict[str, float | None],
             unit: str) -> str:
    labels = _labels()
    exact = [m for m in matches if m.reproduces]
    if exact:
        hit = "; ".join(f"{labels[m.convention]} = {_short(m.value, unit)} ({m.rel_error:+.2%})" for m in exact)
        text = f"{figure} {printed} vs {name}: reproduced by {hit}."
    else:
        best = matches[0]
        text = (f"{figure} {printed} vs {name}: no counting convention reproduces it; closest is "
                f"{labels[best.convention]} = {_short(best.value, unit)} ({best.rel_error:+.1%}).")
    fits = {k: r for k, r in rates.items() if r is not None}
    if fits:
        inside = [f"{r:.2%} ({labels[k].replace('fr-weighted ', '')})" for k, r in fits.items() if 0 <= r <= 1]
        text += (" A firing-rate-weighted count reaches it at fr = " + ", ".join(inside) + " (a fitted rate, not "
                 "a reproduction)." if inside else " No firing rate in [0, 1] reaches it.")
    return text


def _short(value: float, unit: str) -> str:
    return f"{value / 1e6:.3f} M" if unit == "params" else f"{value / 1e9:.3f} G"


def table3(
    models: dict[str, str] | None = None,
    load: Callable[[str], nn.Module] | None = None,
    timestep: int = 500,
) -> Table3:
    """Table III beside our models: counts under every convention and which one reproduces each figure.

    Args:
        models: Role (``dit``, ``sdit``, ``sdit_authors``) -> preset or checkpoint; :data:`DEFAULT_MODELS`.
        load: Name -> model (default: :func:`sdit.targets.load_target`; counts do not depend on weights).
        timestep: Diffusion timestep of the profiled forward (counts do not depend on it).
    """
    models = dict(DEFAULT_MODELS if models is None else models)
    if load is None:
        from sdit.targets import load_target

        def load(name: str) -> nn.Module:
            return load_target(name).model

    paper_by_role = {role: fig for fig in PAPER_TABLE3 for role in fig.compare}
    rows = [model_counts(role, name, load(name), paper_by_role[role].macs, timestep) for role, name in models.items()]
    findings = []
    for fig in PAPER_TABLE3:
        for row in (r for r in rows if r.role in fig.compare):
            params = _matches({"trainable": row.trainable_params, "total": row.params}, fig.params,
                              fig.params_tolerance)
            findings.append(Finding(f"{fig.model} params", fig.params_printed, row.role, row.name, params, {},
                                    _summary(f"{fig.model} params", fig.params_printed, row.name, params, {},
                                             "params")))
            macs = _matches(dict(row.counts), fig.macs, fig.macs_tolerance)
            rates = dict(row.needed_rates)
            findings.append(Finding(f"{fig.model} MACs", fig.macs_printed, row.role, row.name, macs, rates,
                                    _summary(f"{fig.model} MACs", fig.macs_printed, row.name, macs, rates, "macs")))
    notes = [
        f"Counts are per image for one forward (batch 1, t = {timestep}); they depend on neither weights nor t.",
        "Reproduced: the count rounds to the figure as printed (params within 0.005 M, MACs within 0.005 G).",
        "all T / one T: a spiking block's ops counted for each of the T spiking steps, or once. Our sdit-mnist "
        "runs its blocks T times (stream); the authors' layout runs them once and repeats only the LIF input.",
        "Spiking MACs (fr conventions): synaptic ops inside a spiking block that a neuron's spikes reach, the "
        "profiler's paper convention; every other op counts in full.",
    ]
    return Table3(paper=list(PAPER_TABLE3), conventions=list(CONVENTIONS), models=rows, findings=findings,
                  workload={"kind": "forward", "timestep": timestep, "batch_size": 1, "input": "N(0, I) noise"},
                  notes=notes)
