"""The report directory: ``report.html``, ``comparison.json`` and one CSV per table of the page, written as one unit.

The set is built in a staging directory beside ``--out`` and swapped in whole, so a reader finds the old set or the
new one, never a mix, whatever stops the writer (an error, a full disk, a signal): an interrupted write leaves the
old set in place and at most a ``.<name>.staging-*`` directory beside it, which the next writer deletes. A report
directory carries a marker, ``.sdit-report``; ``--overwrite`` replaces only a directory that has one (or an empty
one), never a folder of the user's. One writer at a time: a second one into the same ``--out`` is refused while the
first holds its lock.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from profiling.compare import Comparison
from reports.html import Page, frame_csv, render_page, tables_of
from sdit.artifacts import write_bytes

REPORT, COMPARISON, MARKER = "report.html", "comparison.json", ".sdit-report"
MARKER_FORMAT = "sdit.report/1"


class ReportDirError(ValueError):
    """``--out`` cannot take a report (one-line message)."""


@dataclass(frozen=True)
class Written:
    """What :func:`write_report` wrote: the page, how many tables, and the earlier tables it replaced."""

    report: Path
    tables: int
    stale: list[Path]


def is_report_dir(out: Path) -> bool:
    """Whether ``out`` holds a report of this tool (its marker)."""
    return (out / MARKER).is_file()


def check_report_dir(out: Path, overwrite: bool) -> None:
    """Refuse, before any work, an ``--out`` that a report may not replace.

    Raises:
        ReportDirError: a file or a link; a non-empty folder without the marker; a report without ``overwrite``.
    """
    if out.is_symlink():
        raise ReportDirError(f"--out: {out} is a link; give the directory itself")
    if out.exists() and not out.is_dir():
        raise ReportDirError(f"--out: {out} is a file, not a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not is_report_dir(out):
        raise ReportDirError(f"--out: {out} is not empty and holds no sdit report (no {MARKER} marker); "
                             "choose a new or empty directory")
    if not overwrite:
        raise ReportDirError(f"--out: {out} holds an earlier report; pass --overwrite to replace it")


@contextmanager
def report_lock(out: Path) -> Iterator[None]:
    """Hold the writer's lock of ``out`` (a lock file beside it); refuse a second writer at once."""
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f".{out.name}.sdit-report.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ReportDirError(f"--out: another sdit compare is writing {out}; wait for it or choose another "
                                 "directory") from None
        yield
    finally:
        os.close(fd)


def claim_report_dir(held: ExitStack, out: Path, overwrite: bool, json_path: Path | None = None) -> None:
    """Before any work: check ``out`` (:func:`check_report_dir`) and a ``json_path`` outside it, then take
    ``out``'s writer lock for as long as ``held`` stays open.

    Raises:
        ReportDirError: ``out`` may not take a report, ``json_path`` lies inside it, or another writer holds it.
    """
    check_report_dir(out, overwrite)
    if json_path is not None and str(json_path) != "-" and out.resolve() in json_path.resolve().parents:
        raise ReportDirError(f"--json: {json_path} is inside --out {out}, which the report replaces whole; "
                             "write it elsewhere")
    try:
        held.enter_context(report_lock(out))
    except OSError as err:
        raise ReportDirError(f"--out: cannot lock {out}: {err.strerror}") from None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one step (Linux renameat2 RENAME_EXCHANGE); False where unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    if ctypes.get_errno() in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(b))


def _swap_in(staging: Path, out: Path) -> None:
    """Put the staged set at ``out``: renamed there, or exchanged with the earlier report in one step."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        staging.rename(out)
        return
    if not _exchange(staging, out):  # the old set moves aside, then the new one in: out is old, absent or new
        aside = staging.with_name(staging.name + "-old")
        out.rename(aside)
        staging.rename(out)
        staging = aside
    shutil.rmtree(staging)


def _remove_dead_staging(out: Path) -> None:
    """Delete the staging directories a killed writer left beside ``out``: the caller holds the lock of ``out``,
    so no other writer is building one now."""
    for left in out.parent.glob(f".{out.name}.staging-*"):
        if left.is_dir() and not left.is_symlink():
            shutil.rmtree(left, ignore_errors=True)


def write_report(out: Path, page: Page, comparison: Comparison, json_path: Path | None = None,
                 overwrite: bool = False) -> Written:
    """Write ``comparison.json``, the page's tables and the page as one set into ``out`` (and ``json_path``,
    ``-``: stdout, once the set is built). The caller has checked ``out`` (:func:`check_report_dir`) and holds
    :func:`report_lock`.
    """
    _remove_dead_staging(out)
    staging = out.parent / f".{out.name}.staging-{os.getpid()}-{os.urandom(4).hex()}"
    staging.mkdir(parents=True)
    try:
        # Not write_json: it sorts keys, and the order of presets and conventions is data (first = headline).
        text = json.dumps(comparison.to_dict(), indent=2) + "\n"
        write_bytes(staging / COMPARISON, text.encode())
        frames = tables_of(page)
        for name, frame in frames.items():
            write_bytes(staging / "tables" / f"{name}.csv", frame_csv(frame).encode())
        write_bytes(staging / REPORT, render_page(page).encode("utf-8"))
        marker = {"format": MARKER_FORMAT, "written": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
                  "files": sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())}
        write_bytes(staging / MARKER, (json.dumps(marker, indent=2) + "\n").encode())
        if json_path is not None:
            write_bytes(json_path, text.encode(), overwrite=overwrite)
        stale = sorted(p for p in (out / "tables").glob("*.csv") if p.name not in {f"{n}.csv" for n in frames})
        _swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Written(report=out / REPORT, tables=len(frames), stale=stale)
