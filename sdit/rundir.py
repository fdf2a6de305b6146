"""Run directories: recognisably sdit's, locked for the whole run, and cleared only of what sdit wrote.

A run directory holds a marker, ``.sdit-run`` (JSON: format tag and creation time), written when the run
starts, and a lock file, ``.sdit-run.lock``, that the writing process (rank 0 under DDP) holds with an
exclusive ``flock`` for as long as the run lasts: a second ``sdit train`` on the same directory, with or
without ``--overwrite``, is refused while the first runs. The kernel drops the lock when the process ends,
however it ends, so a killed run leaves nothing to clean up.

A directory without the marker is not a run of this version: resuming or overwriting it is refused with
one line saying so (:func:`check_run_dir`).

``--overwrite`` deletes only the entries sdit writes (:func:`clear_run`): ``run.json``, ``metrics.jsonl``,
``summary.json``, ``samples/step-*.png``, ``checkpoints/step-*.{safetensors,json,train.pt}``,
``checkpoints/latest`` and interrupted writes' temporary files; a folder is removed only when that leaves it
empty. Anything else in the directory is kept, and a directory that is not an sdit run is refused.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sdit import artifacts

MARKER = ".sdit-run"
LOCK = ".sdit-run.lock"
MARKER_FORMAT = "sdit-run/1"
RUN_FILE = "run.json"
_FILES = ("run.json", "metrics.jsonl", "summary.json")
_SAMPLES = ("samples", re.compile(r"^step-\d{8,}\.png$"))
_CHECKPOINTS = ("checkpoints", re.compile(r"^(?:step-\d{8,}\.(?:safetensors|json|train\.pt)|latest)$"))
_TEMP = re.compile(r"^\..+\.tmp$")  # artifacts.atomic_write's temporary files


class RunDirError(ValueError):
    """A run directory that may not be used as asked (one-line message)."""


def has_marker(run_dir: Path | str) -> bool:
    """The directory carries sdit's marker with the right format tag."""
    try:
        data = json.loads((Path(run_dir) / MARKER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and data.get("format") == MARKER_FORMAT


def is_sdit_run(run_dir: Path | str) -> bool:
    """A directory sdit made for a run: it carries the marker."""
    return Path(run_dir).is_dir() and has_marker(run_dir)


def _unmarked(run_dir: Path) -> str:
    """The one line for a run directory with a ``run.json`` but no marker (a run of an earlier sdit)."""
    return (f"run directory {run_dir} has no {MARKER} marker (a run of an earlier sdit is neither resumed nor "
            f"overwritten); start a new run in another directory, with --init-from {run_dir} to begin from its "
            "weights")


def _own_entries_only(run_dir: Path) -> bool:
    """Nothing in ``run_dir`` but the marker and lock (an empty directory, or one a failed start left)."""
    return all(entry.name in (MARKER, LOCK) for entry in run_dir.iterdir())


def check_run_dir(run_dir: Path | str, resume: bool, overwrite: bool) -> None:
    """Decide, before any work, whether a run may start (or resume) in ``run_dir``. Writes nothing.

    Raises:
        RunDirError: resume of something that is not a run; a new run in a non-empty directory without
            ``overwrite``; ``overwrite`` of a directory that is not an sdit run; a path that is a file.
    """
    run_dir = Path(run_dir)
    if resume:
        if not is_sdit_run(run_dir):
            raise RunDirError(_unmarked(run_dir) if (run_dir / RUN_FILE).is_file()
                              else f"no training run to resume at {run_dir} (missing {RUN_FILE})")
        return
    if not os.path.lexists(run_dir):
        try:
            artifacts.check_output("--out", run_dir / MARKER, overwrite=False)
        except artifacts.OutputError as err:
            raise RunDirError(str(err)) from None
        return
    if not run_dir.is_dir():
        raise RunDirError(f"--out: {run_dir} exists and is not a directory")
    if _own_entries_only(run_dir):
        return
    if not is_sdit_run(run_dir):
        if overwrite and (run_dir / RUN_FILE).is_file():
            raise RunDirError(f"--out: {_unmarked(run_dir)}")
        what = f"is not empty and is not an sdit run directory (no {MARKER} marker)"
        if overwrite:
            raise RunDirError(f"--out: {run_dir} {what}; --overwrite only replaces sdit's own runs")
        raise RunDirError(f"--out: {run_dir} {what}; choose a new or empty directory")
    if not overwrite:
        raise RunDirError(f"run directory {run_dir} exists and is not empty; pass --overwrite or --resume")


def _sdit_written(run_dir: Path) -> list[Path]:
    """The paths in ``run_dir`` that sdit writes (see the module doc), files first, then folders."""
    found = [run_dir / name for name in _FILES if (run_dir / name).is_file()]
    found += [entry for entry in run_dir.iterdir() if _TEMP.match(entry.name) and entry.is_file()]
    folders = []
    for name, pattern in (_SAMPLES, _CHECKPOINTS):
        folder = run_dir / name
        if folder.is_dir() and not folder.is_symlink():
            found += [e for e in folder.iterdir() if (pattern.match(e.name) or _TEMP.match(e.name))
                      and (e.is_file() or e.is_symlink()) and not e.is_dir()]
            folders.append(folder)
    return found + folders


def clear_run(run_dir: Path | str) -> list[Path]:
    """Delete what an earlier sdit run wrote in ``run_dir`` (for ``--overwrite``); keep everything else.

    Returns:
        The paths removed.

    Raises:
        RunDirError: ``run_dir`` is not an sdit run directory.
    """
    run_dir = Path(run_dir)
    if not is_sdit_run(run_dir):
        raise RunDirError(f"{run_dir} is not an sdit run directory; nothing removed")
    removed = []
    for path in _sdit_written(run_dir):
        if path.is_dir() and not path.is_symlink():
            try:
                path.rmdir()  # only when empty: a folder with the user's files stays
            except OSError as err:
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                continue
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def write_marker(run_dir: Path | str) -> None:
    """Mark ``run_dir`` as an sdit run directory (kept when present)."""
    run_dir = Path(run_dir)
    if not has_marker(run_dir):
        marker = {"format": MARKER_FORMAT, "created_unix_s": round(time.time(), 3)}
        artifacts.write_json(run_dir / MARKER, marker, overwrite=True)


@contextmanager
def run_lock(run_dir: Path | str) -> Iterator[None]:
    """Hold the run directory's exclusive lock (creating the directory if needed) for the ``with`` body.

    Raises:
        RunDirError: another process holds it; the message names its pid when known.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise RunDirError(f"run directory {run_dir} is in use by another sdit train{who}; wait for it to "
                              "finish or stop it, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race a waiting process)
