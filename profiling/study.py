"""The study floor: a finished comparison of two or more targets, with what the report shows beside it.

:func:`run_study` is what ``sdit compare`` runs: it matches the ``sdit evaluate --json`` records to the
compared targets (before any work: quality beside the wrong model's energy would mislead), runs
:func:`profiling.compare.compare`, puts each model's energy beside its domain FID
(:func:`profiling.compare.with_frontier`), draws each model's sample grid with the counted sampler and records
how the run was made (:class:`RunInfo`). The result, a :class:`FinishedStudy`, is what
:mod:`reports` presents; nothing there estimates or matches anything.

Bad input (an evaluation file that cannot be read, is malformed or evaluated none of the compared
weights) raises :class:`StudyInputError` with a one-line message.
"""

from __future__ import annotations

import json
import math
import platform
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from profiling.compare import Comparison, compare, with_frontier
from profiling.conventions import COUNTING_CONVENTIONS
from profiling.energy import DEFAULT_COSTS, CostsError, EnergyCosts, load_costs, with_memory
from sdit.workload import Workload

if TYPE_CHECKING:
    from sdit.targets import Target

EVALUATIONS = "evaluations"  # a shipped checkpoint directory's own `sdit evaluate --json` records
QUALITY_METRICS = ("fid", "kid", "kid_standard_error", "precision", "recall", "density", "coverage")
VERSIONED = ("torch", "spikingjelly", "numpy", "pandas", "plotly", "sdit")


class StudyInputError(ValueError):
    """An input of the study that cannot be used (one line: which file, and why)."""


@dataclass(frozen=True)
class RunInfo:
    """Provenance of the run that made the study, and what it produced beside the counts.

    Attributes:
        command: The command line, as run.
        created: Date and time (the only part of the page that changes between identical runs).
        versions: Package -> version.
        device: What ran the counts (and the measurement).
        git_revision: The toolkit's revision, or a reason it is unknown.
        seed: Seed of the workload's noise.
        samples: Model label -> (PNG bytes, caption) of the sample grid made in this run.
        evaluations: Model label -> the ``sdit evaluate --json`` results matched to it.
    """

    command: str
    created: str
    versions: dict[str, str]
    device: str
    git_revision: str
    seed: int
    samples: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    evaluations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


@dataclass(frozen=True)
class FinishedStudy:
    """A comparison with what the report shows beside it.

    Attributes:
        comparison: The numbers (:class:`profiling.compare.Comparison`).
        run: How the run was made, its sample grids and matched evaluations.
        descriptions: Target label -> what it is (e.g. ``sdit-small at step 21500 (EMA weights)``).
        provenance: Target label -> its shipped ``provenance.json`` (``None``: none shipped).
        headline_preset: The preset the report leads with.
        headline_convention: The convention the report leads with.
        labels: Target label -> the short label the report and the terminal show (:func:`short_labels`);
            a target not in it keeps its own.
    """

    comparison: Comparison
    run: RunInfo
    descriptions: dict[str, str]
    provenance: dict[str, dict[str, Any] | None]
    headline_preset: str
    headline_convention: str
    labels: dict[str, str] = field(default_factory=dict)


# ---- provenance ------------------------------------------------------------------------------------


def shipped_directory(target: str) -> Path | None:
    """The shipped checkpoint directory a checkpoint target came from, the one that holds ``provenance.json``
    (a directory target, or the directory of a weights file in it); None for a run directory or a loose file."""
    path = Path(target)
    return next((d for d in (path, path.parent) if (d / "provenance.json").is_file()), None)


def provenance_of(target: str) -> dict[str, Any] | None:
    """The shipped checkpoint's ``provenance.json``, None where none is shipped, or ``{"error": why}``."""
    directory = shipped_directory(target)
    if directory is None:
        return None
    try:
        from sdit.artifacts import read_small_json  # on use: reading a saved study loads no more of sdit

        return read_small_json(directory / "provenance.json")
    except (OSError, json.JSONDecodeError) as err:
        return {"error": f"cannot read {directory / 'provenance.json'}: {err}"}


def checked_provenance(target: str) -> dict[str, Any] | None:
    """:func:`provenance_of`, with the fields the report reads checked before any work.

    Raises:
        StudyInputError: ``held_out_eps_mse`` is not a map of timesteps to finite numbers, or its note not text.
    """
    prov = provenance_of(target)
    if not isinstance(prov, dict):
        return prov
    eps, note = prov.get("held_out_eps_mse"), prov.get("held_out_eps_mse_note", "")
    where = f"{shipped_directory(target) / 'provenance.json'}"
    if eps is not None and (not isinstance(eps, dict) or not all(
            isinstance(t, str) and t.isdigit() and _finite_number(v) for t, v in eps.items())):
        raise StudyInputError(f"{where}: held_out_eps_mse must map timesteps to finite numbers")
    if note is not None and not isinstance(note, str):
        raise StudyInputError(f"{where}: held_out_eps_mse_note must be text")
    return prov


def versions() -> dict[str, str]:
    """Python's version and that of each package in :data:`VERSIONED`."""
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def counting_device() -> str:
    """What runs the counts, in words."""
    import torch

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads) for counting"


# ---- evaluation records ----------------------------------------------------------------------------


def _same_path(a: str, b: str) -> bool:
    try:
        return Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve()
    except OSError:  # a name too long for the file system, a loop of links
        return False


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def evaluation_problem(ev: Any) -> str | None:
    """What makes ``ev`` unusable as an ``sdit evaluate --json`` result, or None."""
    from sdit.quality.evaluate import FORMAT

    if not isinstance(ev, dict) or ev.get("format") != FORMAT:
        return f"not an `sdit evaluate --json` result (format {FORMAT})"
    results = ev.get("results")
    if not isinstance(results, dict) or not results or not all(isinstance(r, dict) for r in results.values()):
        return "its 'results' hold no feature network's metrics"
    for features, res in results.items():
        for metric in QUALITY_METRICS:
            if metric in res and not _finite_number(res[metric]):
                return f"results.{features}.{metric} is {res[metric]!r}, not a finite number"
    n = ev.get("num_samples")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        return f"num_samples is {n!r}, not a positive integer"
    if not isinstance(ev.get("sampler"), dict) or not isinstance(ev["sampler"].get("description"), str):
        return "it names no sampler (sampler.description)"
    for key in ("reference", "units"):
        if not isinstance(ev.get(key, {}), dict):
            return f"its {key!r} is not an object"
    if ev.get("target") is None:
        return (f"it evaluated a samples file ({ev.get('samples_file')}), not a checkpoint: nothing ties those "
                "images to a compared model's weights")
    return None


def _match(ev: dict[str, Any], loaded: Sequence[Target]) -> tuple[Target | None, str]:
    """The compared target ``ev`` evaluated, or None and why none is."""
    names = ", ".join(t.label for t in loaded)
    sha = ev.get("weights_sha256")
    if sha:  # the weights file itself decides
        hit = next((t for t in loaded if t.weights_sha256 == sha), None)
        return hit, (f"it evaluated weights with sha256 {sha[:12]}... ({ev.get('model')}), which none of the "
                     f"compared targets ({names}) has")
    target = str(ev.get("target"))
    hit = next((t for t in loaded if t.label == target or _same_path(target, t.label)), None)
    if hit is None:
        return None, f"it evaluated {ev.get('target')!r}, which is not among the compared targets ({names})"
    if ev.get("model") != hit.description:
        return None, f"it evaluated {ev.get('model')!r}, but the compared {hit.label} is {hit.description!r}"
    return hit, ""


def _read_evaluation(path: Path, flag: str, hint: str = "") -> dict[str, Any]:
    try:
        from sdit.artifacts import read_small_json  # on use, as above

        ev = read_small_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StudyInputError(f"{flag} {path}: cannot read it as JSON ({type(err).__name__}: {err}){hint}") from None
    problem = evaluation_problem(ev)
    if problem is not None:
        raise StudyInputError(f"{flag} {path}: {problem}{hint}")
    return ev


def _shipped_evaluation_files(target: Target) -> list[Path]:
    """The ``evaluations/*.json`` of the shipped directory a checkpoint target was loaded from (the one its
    provenance comes from), if any."""
    directory = shipped_directory(target.label) if target.source == "checkpoint" else None
    return sorted((directory / EVALUATIONS).glob("*.json")) if directory is not None else []


def _shipped_match(ev: dict[str, Any], target: Target) -> str:
    """Why a shipped record does not describe ``target``'s weights, or ''."""
    sha = ev.get("weights_sha256")
    if sha:
        return "" if sha == target.weights_sha256 else f"it evaluated other weights (sha256 {sha[:12]}...)"
    # A record without the hash: the directory and the model description decide.
    return "" if ev.get("model") == target.description else f"it evaluated {ev.get('model')!r}"


def match_evaluations(paths: Sequence[Path], loaded: Sequence[Target], shipped: bool = True,
                      note: Callable[[str], None] | None = None) -> dict[str, list[dict[str, Any]]]:
    """``sdit evaluate --json`` records, each matched to the compared target it evaluated (label -> records).

    ``paths`` are the user's ``--quality`` files. A file is matched by the sha256 of the weights it evaluated
    where it records one, else by its target path and model description. With ``shipped``, a shipped
    checkpoint directory's own records (``evaluations/*.json``) follow, each for that directory's target
    only; one a ``--quality`` file already covers (same model and feature network), or one that no longer
    describes the directory's weights, is left out with a ``note`` that says so.

    Raises:
        StudyInputError: a file that cannot be read, is not an evaluate result or holds a malformed figure,
            that evaluated none of the compared weights, or a second file of one model and feature network.
    """
    say = note or (lambda _line: None)
    found: dict[str, list[dict[str, Any]]] = {}
    seen: dict[tuple[str, str], Path] = {}
    for path in paths:
        ev = _read_evaluation(path, "--quality")
        hit, why = _match(ev, loaded)
        if hit is None:
            raise StudyInputError(f"--quality {path}: {why}")
        for features in ev["results"]:
            if (hit.label, features) in seen:
                raise StudyInputError(f"--quality {path}: {seen[hit.label, features]} already gives {hit.label}'s "
                                      f"{features} figures; give one file per model and feature network")
            seen[hit.label, features] = path
        found.setdefault(hit.label, []).append({**ev, "source_file": str(path)})
    for target in loaded if shipped else []:
        for path in _shipped_evaluation_files(target):
            ev = _read_evaluation(path, "shipped evaluation", "; --no-shipped-quality leaves it out")
            why = _shipped_match(ev, target)
            covered = [f for f in ev["results"] if (target.label, f) in seen]
            if why:
                say(f"note: left out the shipped evaluation {path}: {why}, not {target.label}'s "
                    f"{target.description}")
            elif covered:
                say(f"note: left out the shipped evaluation {path}: {seen[target.label, covered[0]]} gives "
                    f"{target.label}'s {covered[0]} figures")
            else:
                seen.update({(target.label, f): path for f in ev["results"]})
                found.setdefault(target.label, []).append({**ev, "source_file": str(path)})
    return found


# ---- short labels ----------------------------------------------------------------------------------

MAX_LABEL_CHARS = 40


def _step_of(description: str) -> str | None:
    """The training step a checkpoint target's description names (``<preset> at step N ...``), or None."""
    match = re.search(r" at step (\d+)\b", description)
    return match.group(1) if match else None


def _short_name(target: Target, by_dir: bool) -> str:
    """A target's name without its path: its preset (or, ``by_dir`` or where the description names no preset,
    its checkpoint directory or file stem), with ``@step`` where the description names the training step."""
    if target.source == "preset":
        return target.label
    preset = target.description.split(" at step ")[0] if " at step " in target.description else ""
    if by_dir or not preset:
        path = Path(target.label)
        place = shipped_directory(target.label)
        name = place.name if place else (path.name if path.is_dir() else path.stem) or target.label
    else:
        name = preset
    step = _step_of(target.description)
    return f"{name}@{step}" if step else name


def check_label(label: str) -> str | None:
    """Why ``label`` cannot name a model in the report (empty, too long, a control character), or None."""
    if not label.strip():
        return "a label may not be empty"
    if len(label) > MAX_LABEL_CHARS:
        return f"a label has at most {MAX_LABEL_CHARS} characters ({label[:20]!r}... has {len(label)})"
    if any(not ch.isprintable() for ch in label):
        return f"{label!r} holds a control character"
    return None


def short_labels(targets: Sequence[Target], given: Sequence[str] = ()) -> dict[str, str]:
    """Target label (the preset name or path as given) -> the short label every table, legend and card shows.

    ``given``: the user's labels, one per target in order (``--label``). Otherwise a preset keeps its name and
    a checkpoint is named by its preset and training step (``sdit-small@21500``); a shipped checkpoint whose
    preset another target shares (a fine-tune beside its base), and any name not unique among ``targets``, by
    its directory (``sdit-small-sd-rate0.1-fmnist@3000``); where that is not unique either, a ``#i`` (the
    target's place on the command line) follows. The full path stays in the provenance.

    Raises:
        StudyInputError: ``given`` is not one unique, usable label per target.
    """
    if given:
        if len(given) != len(targets):
            raise StudyInputError(f"--label: {len(given)} label(s) for {len(targets)} targets; give one per "
                                  "target, in the order of the targets")
        for label in given:
            problem = check_label(label)
            if problem:
                raise StudyInputError(f"--label: {problem}")
        if len(set(given)) != len(given):
            dup = next(g for g in given if list(given).count(g) > 1)
            raise StudyInputError(f"--label: {dup!r} is given twice; each model needs its own label")
        return {t.label: g for t, g in zip(targets, given, strict=True)}
    names = [_short_name(t, by_dir=False) for t in targets]
    presets = [n.split("@")[0] for n in names]
    names = [_short_name(t, by_dir=True) if presets.count(p) > 1 and t.source == "checkpoint"
             and shipped_directory(t.label) is not None else n for t, n, p in zip(targets, names, presets)]
    if len(set(names)) != len(names):
        names = [n if names.count(n) == 1 else _short_name(t, by_dir=True) for t, n in zip(targets, names)]
    if len(set(names)) != len(names):
        names = [n if names.count(n) == 1 else f"{n}#{i + 1}" for i, n in enumerate(names)]
    return {t.label: n for t, n in zip(targets, names, strict=True)}


# ---- sample grids and the study --------------------------------------------------------------------


def study_inputs(targets: Sequence[str], conventions: Sequence[str], costs: Sequence[str],
                 memory: str | None) -> tuple[list[str], list[str], list[EnergyCosts]]:
    """The targets, conventions and cost presets (each with the ``memory`` term) of a study, checked before
    any work: two or more distinct targets, known conventions (repeats dropped; none: ``paper``), loadable
    presets (none: the default).

    Raises:
        StudyInputError: one line naming the option.
    """
    targets = list(targets)
    if len(targets) < 2:
        raise StudyInputError("compare needs two or more targets (presets or checkpoints)")
    if len(set(targets)) != len(targets):
        raise StudyInputError("each target may be named once")
    conventions = list(dict.fromkeys(conventions or ["paper"]))
    for name in conventions:
        if name not in COUNTING_CONVENTIONS:
            raise StudyInputError(f"--convention {name!r}: valid conventions are {', '.join(COUNTING_CONVENTIONS)}")
    try:
        presets = [with_memory(load_costs(spec), memory) for spec in dict.fromkeys(costs or [DEFAULT_COSTS])]
    except CostsError as err:
        raise StudyInputError(str(err)) from None
    return targets, conventions, presets


def sample_grid(model: Any, num: int, workload: Workload) -> bytes:
    """A PNG grid of ``num`` images sampled with the workload's sampler, steps, eta and seed."""
    import io

    from PIL import Image as PILImage

    from sdit.artifacts import image_grid
    from sdit.diffusion import sample

    images = sample(model, replace(workload, batch_size=num))  # (num, C, H, W)
    grid = image_grid(images)
    buffer = io.BytesIO()
    PILImage.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(buffer, format="PNG")
    return buffer.getvalue()


def run_study(
    targets: Sequence[Target],
    workload: Workload,
    *,
    costs: Sequence[EnergyCosts],
    conventions: Sequence[str],
    command: str,
    created: str,
    samples: int = 0,
    quality: Sequence[Path] = (),
    shipped_quality: bool = True,
    measure: bool = False,
    device: str = "cuda:0",
    min_window_s: float = 1.0,
    idle_s: float = 5.0,
    meter_kind: str = "auto",
    labels: Sequence[str] = (),
    progress: Callable[[str], None] | None = None,
    note: Callable[[str], None] | None = None,
) -> FinishedStudy:
    """Compare ``targets`` over ``workload`` and gather what the report shows beside the numbers.

    Args:
        targets: The loaded targets (:class:`sdit.targets.Target`), two or more.
        workload: The one workload profiled, estimated, measured and sampled.
        costs: Cost presets; the first is the headline.
        conventions: Counting conventions; the first is the headline.
        command: The command line as run; ``created``: its date and time.
        samples: Images in each model's sample grid (0 or a single forward: none).
        quality: ``sdit evaluate --json`` files of the targets (matched before any work).
        shipped_quality: Also take the evaluations a shipped checkpoint directory holds.
        measure, device, min_window_s, idle_s, meter_kind: As :func:`profiling.compare.compare`.
        labels: The user's short label of each target, in order (none: :func:`short_labels` makes them).
        progress: Called with a line before each long step; ``note``: with each note on the inputs.

    Raises:
        StudyInputError: an evaluation record that cannot be used; ``labels`` not one unique label per target.
        profiling.counter.UnsupportedOpError, profiling.counter.UnknownNeuronError: as ``compare``.
    """
    from sdit.checkpoint import git_revision

    say = progress or (lambda _line: None)
    short = short_labels(targets, labels)  # before any work, as the evaluations
    evaluations = match_evaluations(list(quality), targets, shipped_quality, note)  # before any work
    provenance = {t.label: checked_provenance(t.label) if t.source == "checkpoint" else None for t in targets}
    comparison = compare(list(targets), workload, costs=list(costs), conventions=list(conventions),
                         measure=measure, device=device, min_window_s=min_window_s, idle_s=idle_s,
                         meter_kind=meter_kind, progress=say)
    comparison = with_frontier(comparison, evaluations)  # energy against domain FID, saved with the numbers
    grids: dict[str, tuple[bytes, str]] = {}
    if samples and workload.is_sampling:
        for target in targets:
            say(f"sampling {samples} images from {target.label}: {workload.label()}")
            grids[target.label] = (sample_grid(target.model, samples, workload),
                                   f"{short[target.label]}: {samples} samples drawn in this run with the counted "
                                   f"sampler ({workload.sampler()}, seed {workload.seed}; "
                                   f"{target.description})")
    run = RunInfo(command=command, created=created, versions=versions(), device=counting_device(),
                  git_revision=git_revision(), seed=workload.seed, samples=grids, evaluations=evaluations)
    return FinishedStudy(
        comparison=comparison, run=run, descriptions={t.label: t.description for t in targets},
        provenance=provenance, headline_preset=comparison.costs[0].name,
        headline_convention=next(iter(comparison.conventions)), labels=short)


def energy_summary(study: Comparison) -> dict[str, Any]:
    """The JSON ``sdit energy`` writes: the first target's figures under the first preset and the first
    convention (``estimated``; ``firing_rate_sweep`` under the paper convention where it was estimated), every
    convention's totals, the break-even rates, and the whole comparison under ``comparison``."""
    main = study.targets[0]
    costs = study.costs[0]
    first = next(iter(study.conventions))
    headline = main.estimate(costs.name, first)
    paper_sweep = next((e.sweep for e in main.estimates if e.costs == costs.name and e.convention == "paper"),
                       None)
    be = None
    if len(study.targets) > 1:
        rows = [b for b in study.break_even if b.model == main.name and b.costs == costs.name]
        paper = next((b for b in rows if b.convention == "paper"), rows[0] if rows else None)
        base = study.targets[1]
        base_j = base.estimate(costs.name, next(iter(study.conventions))).total_j
        be = {"baseline": base.name, "baseline_j": base_j,
              "firing_rate": None if paper is None else paper.firing_rate,
              "convention": None if paper is None else paper.convention,
              "by_convention": {b.convention: b.firing_rate for b in rows}}
    return {
        "target": main.name,
        "workload": study.workload.to_dict(),
        "workload_label": study.workload.label(),
        "batch_size": study.workload.batch_size,
        "costs": costs.to_dict(),
        "convention": first,
        "estimated": headline.per_image,
        "estimated_per_step": headline.per_step,
        "estimated_layers": headline.layers,
        "by_convention": {e.convention: e.estimate.per_image for e in main.estimates if e.costs == costs.name},
        "firing_rate_sweep": paper_sweep,
        "break_even": be,
        "conventions": {"unit": "joules per image over the workload", **main.profile.conventions},
        "measured": main.measured,
        "measured_reason": main.measured_reason,
        "baseline_measured": study.targets[1].measured if len(study.targets) > 1 else None,
        "baseline_measured_reason": study.targets[1].measured_reason if len(study.targets) > 1 else None,
        "comparison": study.to_dict(),
    }
