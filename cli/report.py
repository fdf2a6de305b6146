"""``sdit report STUDY.json [...]``: the HTML report and CSV tables of saved studies, no model run.

Each study is the ``comparison.json`` that `sdit compare` writes (or its ``--json``). Several studies of
one workload (the same sampler, costs, conventions: made as separate jobs, one per checkpoint or pair)
merge into one report; studies of different workloads are refused.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from cli.common import (
    DATA_ERROR,
    OUTPUT_PANEL,
    SditCommand,
    command_line,
    command_output,
    fail,
    in_panels,
    note,
    present_comparison,
    quiet_option,
)
from cli.options import label_option
from profiling.compare import Comparison, break_evens, with_frontier
from profiling.study import (
    EVALUATIONS,
    FinishedStudy,
    RunInfo,
    StudyInputError,
    checked_provenance,
    counting_device,
    match_evaluations,
    short_labels,
    versions,
)
from reports.report import ReportDirError, claim_report_dir

MAX_STUDY_BYTES = 512 * 2**20  # a study of many layers and steps is tens of MB; more is not one


def read_study(path: Path) -> Comparison:
    """The comparison saved in ``path``.

    Raises:
        ValueError: unreadable, or not a comparison (one line).
    """
    try:
        if not path.is_file():
            raise ValueError("not a file")
        if path.stat().st_size > MAX_STUDY_BYTES:
            raise ValueError(f"larger than {MAX_STUDY_BYTES // 2**20} MiB")
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return Comparison.from_dict(data)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a saved study ({type(err).__name__}: {err})") from None
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def merge_studies(studies: list[tuple[Path, Comparison]]) -> Comparison:
    """One comparison of every target of ``studies``, in order (a target in several studies with the same
    results, such as a shared baseline, once), its break-even rates taken over all of them; all must share
    workload, costs, conventions and sweep rates.

    Raises:
        ValueError: a study of another workload (or costs, conventions, rates), or a target with other results
            in another study.
    """
    (first_path, first), rest = studies[0], studies[1:]
    for path, other in rest:
        for what, a, b in (("workload", first.workload.to_dict(), other.workload.to_dict()),
                           ("cost presets", [c.to_dict() for c in first.costs], [c.to_dict() for c in other.costs]),
                           ("conventions", first.conventions, other.conventions),
                           ("sweep rates", first.sweep_rates, other.sweep_rates)):
            if a != b:
                shown = (f"{other.workload.label()} vs {first.workload.label()}" if what == "workload"
                         else f"{_short(b)} vs {_short(a)}")
                raise ValueError(f"{path} and {first_path} are studies of different {what} ({shown}); a report "
                                 f"merges studies of one {what}")
    kept: dict[str, tuple[Path, Any]] = {}
    for path, study in studies:
        for t in study.targets:
            if t.name not in kept:
                kept[t.name] = (path, t)
            elif kept[t.name][1].to_dict() != t.to_dict():
                raise ValueError(f"{t.name} has other results in {kept[t.name][0]} than in {path}; a report shows "
                                 "each target once")
    if not rest:
        return first
    notes: dict[str, str] = {}
    for _, study in studies:
        notes.update(study.notes)
    targets = [t for _, t in kept.values()]
    return Comparison(workload=first.workload, costs=first.costs, conventions=first.conventions,
                      sweep_rates=first.sweep_rates, targets=targets,
                      break_even=break_evens(targets, first.costs, list(first.conventions)), notes=notes)


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _targets(comparison: Comparison) -> tuple[list[Any], list[str]]:
    """The compared targets that can still be found here (their description, weights sha256, shipped
    directory: what the report shows beside the numbers), and the names of those that cannot."""
    from sdit.targets import TargetError, load_target

    found, missing = [], []
    for t in comparison.targets:
        try:
            found.append(load_target(t.name))  # loads the weights to name and hash them; runs nothing
        except (TargetError, ValueError, OSError):
            missing.append(t.name)
    return found, missing


def report_cmd(
    studies: list[Path] = typer.Argument(..., help="Saved studies: comparison.json files of `sdit compare` (one "
                                         "or more; several of one workload merge into one report)."),
    out: Path = typer.Option(Path("out/report"), "--out", help="Directory for report.html, comparison.json, CSVs."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing report in --out."),
    quality: list[Path] = typer.Option(
        [], "--quality", help="An `sdit evaluate --json` file of one of the targets (repeat), as for compare."),
    shipped_quality: bool = typer.Option(
        True, "--shipped-quality/--no-shipped-quality", help="Include the evaluations a shipped checkpoint "
        f"directory holds ({EVALUATIONS}/*.json), as compare does."),
    labels: list[str] = label_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Rebuild the HTML report and CSV tables from saved studies, without running a model.

    Example: sdit report out/cmp-a/comparison.json out/cmp-b/comparison.json --out out/report
    """
    with command_output(quiet, False), ExitStack() as held:
        if len(set(map(str, studies))) != len(studies):
            fail("each study may be named once")
        try:
            read = [(path, read_study(path)) for path in studies]
            comparison = merge_studies(read)
        except ValueError as err:
            fail(str(err), DATA_ERROR)
        try:
            claim_report_dir(held, out, overwrite)
        except ReportDirError as err:
            fail(str(err))
        targets, missing = _targets(comparison)
        if missing and labels:
            fail("--label needs every target of the studies here (to check one label per target)")
        try:
            short = short_labels(targets, labels) if not missing else {}  # as compare names them
        except StudyInputError as err:
            fail(str(err))
        if missing:
            note(f"note: {', '.join(missing)} not found here: the report names them as the study does, without "
                 "their description, provenance or shipped evaluations")
        try:
            evaluations = match_evaluations(list(quality), targets, shipped_quality, note)
        except StudyInputError as err:
            fail(str(err), DATA_ERROR)
        try:
            provenance = {t.label: checked_provenance(t.label) if t.source == "checkpoint" else None
                          for t in targets}
        except StudyInputError as err:
            fail(str(err), DATA_ERROR)
        # the FIDs matched here, else those the saved studies carry
        comparison = with_frontier(comparison, evaluations, [c.frontier for _, c in read if c.frontier])
        from sdit.checkpoint import git_revision

        workload = comparison.workload
        run = RunInfo(command=command_line(), created=datetime.now(UTC).strftime(
                          "%Y-%m-%d %H:%M:%S UTC"), versions=versions(), device=counting_device(),
                      git_revision=git_revision(), seed=workload.seed, samples={}, evaluations=evaluations)
        finished = FinishedStudy(
            comparison=comparison, run=run, descriptions={t.label: t.description for t in targets},
            provenance=provenance,
            headline_preset=comparison.costs[0].name, headline_convention=next(iter(comparison.conventions)),
            labels=short)
        present_comparison(finished, out, None, overwrite, quiet, source=(
            f" ({len(comparison.targets)} targets from {len(studies)} stud{'y' if len(studies) == 1 else 'ies'})"))


# Help panels of the command's options (cli.common.in_panels); the rest are its main "Options".
PANELS = {OUTPUT_PANEL: ("--out", "--overwrite")}


def register(app: typer.Typer) -> None:
    app.command("report", cls=SditCommand)(in_panels(report_cmd, PANELS))
