"""``sdit compare [TARGET ...]``: two or more models over one workload, as an HTML energy report."""

from __future__ import annotations

import json
import math
import platform
import shlex
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from cli.common import (
    DATA_ERROR,
    MAX_IMAGES,
    SditCommand,
    check_number,
    check_outputs_or_fail,
    command_output,
    echo,
    fail,
    load_target_or_fail,
    note,
    progress_option,
    quiet_option,
    status,
)
from cli.options import (
    batch_size_option,
    device_from_option,
    device_option,
    eta_option,
    method_option,
    sample_steps_option,
    seed_option,
    timestep_option,
    workload_from_options,
)
from profiling.compare import compare
from profiling.conventions import DEFAULT_CONVENTIONS
from profiling.counter import UnknownNeuronError, UnsupportedOpError
from profiling.energy import COST_PRESETS, DEFAULT_COSTS, CostsError, load_costs
from profiling.meters import METER_KINDS
from reports import terminal
from reports.html import frame_csv, tables_of, write_page
from reports.page import RunInfo, build_page
from reports.study import CONVENTION_TEXT, study_from_comparison
from reports.tables import QUALITY_METRICS
from sdit.artifacts import is_stdout, remove_files, write_bytes
from sdit.checkpoint import git_revision
from sdit.quality.evaluate import FORMAT as EVALUATE_FORMAT
from sdit.targets import Target
from sdit.workload import Workload

DEFAULT_TARGETS = ["checkpoints/sdit-small-fmnist", "checkpoints/dit-small-fmnist"]
REPORT, COMPARISON = "report.html", "comparison.json"
EVALUATIONS = "evaluations"  # a shipped checkpoint directory's own `sdit evaluate --json` records
VERSIONED = ("torch", "spikingjelly", "numpy", "pandas", "plotly", "sdit")


def _outputs(out: Path) -> list[Path]:
    return [out / REPORT, out / COMPARISON]


def _check_outputs(out: Path, overwrite: bool, json_path: Path | None = None) -> None:
    """All output-path checks of the command, before any work (fail unless --overwrite)."""
    if out.exists() and not out.is_dir():
        fail(f"--out: {out} is a file, not a directory")
    check_outputs_or_fail({"--out (report)": out / REPORT, "--out (comparison)": out / COMPARISON,
                           "--json": json_path}, overwrite, stdout_ok=("--json",))
    tables_dir = out / "tables"
    if tables_dir.is_dir() and any(tables_dir.glob("*.csv")) and not overwrite:
        fail(f"--out: {tables_dir} holds the tables of an earlier report; pass --overwrite to replace them")


def _shipped_directory(target: str) -> Path | None:
    """The shipped checkpoint directory a checkpoint target came from, the one that holds ``provenance.json``
    (a directory target, or the directory of a weights file in it); None for a run directory or a loose file."""
    path = Path(target)
    return next((d for d in (path, path.parent) if (d / "provenance.json").is_file()), None)


def _provenance(target: str) -> dict[str, Any] | None:
    """The shipped checkpoint's ``provenance.json``, or None."""
    directory = _shipped_directory(target)
    if directory is None:
        return None
    try:
        return json.loads((directory / "provenance.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        return {"error": f"cannot read {directory / 'provenance.json'}: {err}"}


def _same_path(a: str, b: str) -> bool:
    try:
        return Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve()
    except OSError:  # a name too long for the file system, a loop of links
        return False


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _evaluation_problem(ev: Any) -> str | None:
    """What makes ``ev`` unusable as an ``sdit evaluate --json`` result, or None."""
    if not isinstance(ev, dict) or ev.get("format") != EVALUATE_FORMAT:
        return f"not an `sdit evaluate --json` result (format {EVALUATE_FORMAT})"
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


def _match(ev: dict[str, Any], loaded: list[Target]) -> tuple[Target | None, str]:
    """The compared target ``ev`` evaluated, or None and why none is."""
    names = ", ".join(t.label for t in loaded)
    sha = ev.get("weights_sha256")
    if sha:  # written by sdit evaluate since 2026-12-02: the weights file itself decides
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
        ev = json.loads(path.read_text(), parse_constant=lambda c: float("nan"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        fail(f"{flag} {path}: cannot read it as JSON ({type(err).__name__}: {err}){hint}", DATA_ERROR)
    problem = _evaluation_problem(ev)
    if problem is not None:
        fail(f"{flag} {path}: {problem}{hint}", DATA_ERROR)
    return ev


def _shipped_evaluation_files(target: Target) -> list[Path]:
    """The ``evaluations/*.json`` of the shipped directory a checkpoint target was loaded from (the one its
    provenance comes from), if any."""
    directory = _shipped_directory(target.label) if target.source == "checkpoint" else None
    return sorted((directory / EVALUATIONS).glob("*.json")) if directory is not None else []


def _shipped_match(ev: dict[str, Any], target: Target) -> str:
    """Why a shipped record does not describe ``target``'s weights, or ''."""
    sha = ev.get("weights_sha256")
    if sha:
        return "" if sha == target.weights_sha256 else f"it evaluated other weights (sha256 {sha[:12]}...)"
    # Records written before sdit evaluate stored the hash: the directory and the model description decide.
    return "" if ev.get("model") == target.description else f"it evaluated {ev.get('model')!r}"


def _evaluations(paths: list[Path], loaded: list[Target], shipped: bool = True) -> dict[str, list[dict[str, Any]]]:
    """``sdit evaluate --json`` records, each matched to the compared target it evaluated (label -> records).

    ``paths`` are the user's ``--quality`` files. A file is matched by the sha256 of the weights it evaluated
    where it records one, else (older files) by its target path and model description. A file that cannot be
    read, is not an evaluate result or holds a malformed figure, that evaluated none of the compared weights,
    or a second file of one model and feature network, stops the command with one line before any work:
    quality beside the wrong model's energy would mislead.

    With ``shipped``, a shipped checkpoint directory's own records (``evaluations/*.json``) follow, each for
    that directory's target only; one a ``--quality`` file already covers (same model and feature network),
    or one that no longer describes the directory's weights, is left out with a note that says so.
    """
    found: dict[str, list[dict[str, Any]]] = {}
    seen: dict[tuple[str, str], Path] = {}
    for path in paths:
        ev = _read_evaluation(path, "--quality")
        hit, why = _match(ev, loaded)
        if hit is None:
            fail(f"--quality {path}: {why}")
        for features in ev["results"]:
            if (hit.label, features) in seen:
                fail(f"--quality {path}: {seen[hit.label, features]} already gives {hit.label}'s {features} "
                     "figures; give one file per model and feature network")
            seen[hit.label, features] = path
        found.setdefault(hit.label, []).append({**ev, "source_file": str(path)})
    for target in loaded if shipped else []:
        for path in _shipped_evaluation_files(target):
            ev = _read_evaluation(path, "shipped evaluation", "; --no-shipped-quality leaves it out")
            why = _shipped_match(ev, target)
            covered = [f for f in ev["results"] if (target.label, f) in seen]
            if why:
                note(f"note: left out the shipped evaluation {path}: {why}, not {target.label}'s "
                     f"{target.description}")
            elif covered:
                note(f"note: left out the shipped evaluation {path}: {seen[target.label, covered[0]]} gives "
                     f"{target.label}'s {covered[0]} figures")
            else:
                seen.update({(target.label, f): path for f in ev["results"]})
                found.setdefault(target.label, []).append({**ev, "source_file": str(path)})
    return found


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _device() -> str:
    import torch

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads) for counting"


def _samples(model: Any, num: int, workload: Workload) -> bytes:
    """A PNG grid of ``num`` images sampled with the workload's sampler, steps, eta and seed."""
    import io
    from dataclasses import replace

    from PIL import Image as PILImage

    from sdit.artifacts import image_grid
    from sdit.diffusion import sample

    images = sample(model, replace(workload, batch_size=num))  # (num, C, H, W)
    grid = image_grid(images)
    buffer = io.BytesIO()
    PILImage.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(buffer, format="PNG")
    return buffer.getvalue()


def compare_cmd(
    targets: list[str] | None = typer.Argument(
        None, help="Two or more presets or checkpoints (default: the shipped sdit-small and dit-small)."),
    method: str = method_option(),
    sample_steps: int | None = sample_steps_option(),
    eta: float | None = eta_option(),
    timestep: int | None = timestep_option(),
    seed: int = seed_option(),
    batch_size: int = batch_size_option(),
    costs: list[str] = typer.Option(
        list(COST_PRESETS), "--costs", help="Cost presets or TOML files (repeat); the first is the headline."),
    conventions: list[str] = typer.Option(
        ["paper", *(c for c in DEFAULT_CONVENTIONS if c != "paper")], "--convention",
        help=f"Conventions to compare (repeat; the first is the headline): {', '.join(CONVENTION_TEXT)}."),
    samples: int = typer.Option(16, "--samples", min=0, help="Images in each model's sample grid (0: none)."),
    measure: bool = typer.Option(False, "--measure", help="Also measure the energy of sampling (see --meter)."),
    device: str | None = device_option("the models run on for --measure (counting and the sample grids run on "
                                       "the CPU)"),
    meter: str = typer.Option("auto", "--meter", help="Meter for --measure: auto (NVML on a GPU, RAPL on the "
                              "CPU), nvml, or cpu (RAPL: CPU packages only)."),
    min_window_s: float = typer.Option(1.0, "--min-window-s", min=0.0, help="Shortest measured window."),
    idle_s: float = typer.Option(5.0, "--idle-s", min=0.0, help="Seconds of idle-power measurement."),
    out: Path = typer.Option(Path("out/compare"), "--out", help="Directory for report.html, comparison.json, CSVs."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing report in --out (and --json)."),
    json_path: Path | None = typer.Option(
        None, "--json", help="Also write the comparison (the JSON of --out's comparison.json) to this file ('-': "
        "stdout, the tables then on stderr)."),
    quality: list[Path] = typer.Option(
        [], "--quality", help="An `sdit evaluate --json` file of one of the targets (repeat): its FID, KID and "
        "precision / recall go in the report's quality section, beside each checkpoint's held-out eps-MSE."),
    shipped_quality: bool = typer.Option(
        True, "--shipped-quality/--no-shipped-quality", help="Include the evaluations a shipped checkpoint "
        f"directory holds ({EVALUATIONS}/*.json; a --quality file of the same model and features replaces one)."),
    quiet: bool = quiet_option(),
    progress: bool | None = progress_option("counting, sampling and measuring"),
) -> None:
    """Compare models over one workload and write a self-contained HTML energy report.

    Example: sdit compare checkpoints/sdit-small-fmnist checkpoints/dit-small-fmnist --sample-steps 20 --out out/cmp
    """
    with command_output(quiet, progress):
        _compare(targets, batch_size, timestep, sample_steps, method, eta, seed, costs, conventions, samples, measure,
                 device, meter, min_window_s, idle_s, out, overwrite, json_path, quiet, quality, shipped_quality)


def _compare(targets: list[str] | None, batch_size: int, timestep: int | None, sample_steps: int | None, method: str,
             eta: float | None, seed: int, costs: list[str], conventions: list[str], samples: int, measure: bool,
             device: str | None, meter: str, min_window_s: float, idle_s: float, out: Path, overwrite: bool,
             json_path: Path | None, quiet: bool, quality: list[Path] | None = None,
             shipped_quality: bool = True) -> None:
    workload = workload_from_options(method, sample_steps, eta, timestep, batch_size, seed)
    device = device_from_option(device)
    check_number("--samples", samples, 0, MAX_IMAGES)
    check_number("--min-window-s", min_window_s, 0, 3600)
    check_number("--idle-s", idle_s, 0, 3600)
    if meter not in METER_KINDS:
        fail(f"--meter {meter!r}: valid meters are {', '.join(METER_KINDS)}")
    _check_outputs(out, overwrite, json_path)
    to_stdout = is_stdout(json_path)  # the JSON alone on stdout; the tables and lines go to stderr
    targets = list(targets or DEFAULT_TARGETS)
    if len(targets) < 2:
        fail("compare needs two or more targets (presets or checkpoints)")
    if len(set(targets)) != len(targets):
        fail("each target may be named once")
    conventions = list(dict.fromkeys(conventions or ["paper"]))
    for name in conventions:
        if name not in CONVENTION_TEXT:
            fail(f"--convention {name!r}: valid conventions are {', '.join(CONVENTION_TEXT)}")
    try:
        presets = [load_costs(spec) for spec in dict.fromkeys(costs or [DEFAULT_COSTS])]
    except CostsError as err:
        fail(str(err))

    loaded = [load_target_or_fail(t, "its counts come from untrained weights") for t in targets]
    evaluations = _evaluations(list(quality or []), loaded, shipped_quality)  # before any work
    try:
        comparison = compare(loaded, workload, costs=presets, conventions=conventions, measure=measure,
                             device=device, min_window_s=min_window_s, idle_s=idle_s, meter_kind=meter,
                             progress=status)
    except (UnsupportedOpError, UnknownNeuronError) as err:
        fail(str(err), DATA_ERROR)
    grids: dict[str, tuple[bytes, str]] = {}
    if samples and workload.is_sampling:
        for target in loaded:
            status(f"sampling {samples} images from {target.label}: {workload.label()}")
            grids[target.label] = (_samples(target.model, samples, workload),
                                   f"{target.label}: {samples} samples drawn in this run with the counted sampler "
                                   f"({workload.sampler()}, seed {seed}; "
                                   f"{target.description})")
    study = study_from_comparison(comparison, {t.label: t.description for t in loaded},
                                  {t.label: _provenance(t.label) if t.source == "checkpoint" else None for t in loaded},
                                  headline_preset=presets[0].name, headline_convention=conventions[0])
    run = RunInfo(command=shlex.join(["sdit", *sys.argv[1:]]) if Path(sys.argv[0]).name in ("sdit", "main.py")
                  else shlex.join(sys.argv), created=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
                  versions=_versions(), device=_device(), git_revision=git_revision(), seed=seed, samples=grids,
                  evaluations=evaluations)
    page = build_page(study, run)
    _print(study, Console(stderr=to_stdout, quiet=quiet and to_stdout))
    # Not write_json: it sorts keys, and the order of presets and conventions is data (first = headline).
    text = json.dumps(comparison.to_dict(), indent=2) + "\n"
    write_bytes(out / COMPARISON, text.encode(), overwrite=overwrite)
    if json_path is not None:
        write_bytes(json_path, text.encode(), overwrite=overwrite)
    frames = tables_of(page)
    for name, frame in frames.items():  # checked up front: no earlier tables unless --overwrite
        write_bytes(out / "tables" / f"{name}.csv", frame_csv(frame).encode(), overwrite=True)
    stale = sorted(set((out / "tables").glob("*.csv")) - {out / "tables" / f"{name}.csv" for name in frames})
    remove_files(stale)  # an earlier report's tables this one has not (--overwrite): never beside the new report
    if stale:
        note(f"note: removed {len(stale)} table(s) of the earlier report that this one has not: "
             f"{', '.join(p.name for p in stale)}")
    report = write_page(page, out / REPORT, overwrite=overwrite)
    also = f" (and {json_path})" if json_path is not None and not to_stdout else ""
    echo(f"wrote {out / COMPARISON}{also} and {len(frames)} CSV tables in {out / 'tables'}", err=to_stdout)
    echo(f"report: {report}", err=to_stdout)


def _print(study: Any, console: Console) -> None:
    """The verdict per convention for each model pair, from the same table the page shows."""
    console.out(terminal.sensitivity_text(study, console.width), end="", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("compare", cls=SditCommand)(compare_cmd)
