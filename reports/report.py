"""The report directory: ``report.html``, ``comparison.json`` and one CSV per table of the page."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from profiling.compare import Comparison
from reports.html import Page, frame_csv, tables_of, write_page
from sdit.artifacts import remove_files, write_bytes

REPORT, COMPARISON = "report.html", "comparison.json"


@dataclass(frozen=True)
class Written:
    """What :func:`write_report` wrote: the page, how many tables, and the earlier tables it removed."""

    report: Path
    tables: int
    stale: list[Path]


def write_report(out: Path, page: Page, comparison: Comparison, json_path: Path | None = None,
                 overwrite: bool = False) -> Written:
    """Write ``comparison.json`` (and ``json_path``, ``-``: stdout), the page's tables and the page into ``out``.

    An earlier report's tables that this page has not are removed (never beside the new report); the
    caller has checked the paths (nothing is replaced unless ``overwrite``).
    """
    # Not write_json: it sorts keys, and the order of presets and conventions is data (first = headline).
    text = json.dumps(comparison.to_dict(), indent=2) + "\n"
    write_bytes(out / COMPARISON, text.encode(), overwrite=overwrite)
    if json_path is not None:
        write_bytes(json_path, text.encode(), overwrite=overwrite)
    frames = tables_of(page)
    for name, frame in frames.items():
        write_bytes(out / "tables" / f"{name}.csv", frame_csv(frame).encode(), overwrite=True)
    stale = sorted(set((out / "tables").glob("*.csv")) - {out / "tables" / f"{name}.csv" for name in frames})
    remove_files(stale)
    return Written(report=write_page(page, out / REPORT, overwrite=overwrite), tables=len(frames), stale=stale)
