"""Park a training run's resume point in the repository, or restore it, so that a run outlives its machine.

    .venv/bin/python scripts/park_run.py runs/sdit-small-sd-fmnist parked/sdit-small-sd-fmnist
    .venv/bin/python scripts/park_run.py --restore parked/sdit-small-sd-fmnist runs/sdit-small-sd-fmnist

Parking copies what ``sdit train`` needs to resume exactly, and nothing else: the run marker, run.json,
metrics.jsonl and the latest checkpoint (weights, metadata, training state: about 13 MB for
sdit-small-sd), checks that the copied training state belongs to the copied weights, and writes
DEST/PARKED.json (step, source, the parking tree's git revision). The writing run may keep going:
the three files are read from the checkpoint ``latest`` names, again if the run pruned it meanwhile.

DEST must be new, or an earlier park of the same run (same marker, not a later step) holding
nothing but a park's files; ``--replace`` lifts the same-run and later-step checks only. The new
files, then ``latest``, then PARKED.json are written (each atomically) before the older checkpoint
is deleted, so an interrupted park still names a whole checkpoint.

Restoring checks the park, then copies it into a run directory that does not exist yet (never
over a run); the run's own ``sdit train`` command, with ``--out`` at that directory, resumes it.
A park is not a run directory to train in: restore it first.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sdit.artifacts import write_bytes, write_json  # noqa: E402
from sdit.checkpoint import (  # noqa: E402
    CHECKPOINT_DIR,
    LATEST,
    CheckpointError,
    _step_of,
    git_revision,
    load_checkpoint,
    load_training_state,
    resolve_checkpoint,
    training_state_path,
)
from sdit.rundir import MARKER  # noqa: E402

PARKED = "PARKED.json"
RUN_FILES = (MARKER, "run.json", "metrics.jsonl")
PARK_ENTRIES = {*RUN_FILES, PARKED, CHECKPOINT_DIR}


class ParkError(Exception):
    """A refusal or a failure, said in one line."""


def checkpoint_files(weights: Path) -> list[Path]:
    """The three files of one checkpoint: weights, metadata, training state."""
    return [weights, weights.with_suffix(".json"), training_state_path(weights)]


def _read_latest(run: Path) -> tuple[Path, dict[str, bytes]]:
    """The latest checkpoint's three files and the run's files, in memory (twice if the run pruned it meanwhile)."""
    for attempt in range(2):
        weights = resolve_checkpoint(run)
        try:
            blobs = {p.name: p.read_bytes() for p in checkpoint_files(weights)}
            runs = {name: (run / name).read_bytes() for name in RUN_FILES}
        except FileNotFoundError as err:
            if attempt == 0:
                continue
            raise ParkError(f"{run}: {err.filename} is missing") from None
        return weights, blobs | runs
    raise AssertionError("unreachable")


def _check_dest(dest: Path, marker: bytes, step: int, replace: bool) -> None:
    """Refuse a DEST that is not new and not an earlier park of this run."""
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise ParkError(f"{dest} is not a directory")
    if not dest.exists() or not any(dest.iterdir()):
        return
    if not (dest / PARKED).is_file():
        raise ParkError(f"{dest} exists and is not a park (no {PARKED}); choose a new directory")
    entries = {p.name for p in dest.iterdir()}
    if entries - PARK_ENTRIES:
        raise ParkError(f"{dest} holds more than a park ({', '.join(sorted(entries - PARK_ENTRIES))}); refusing")
    links = [p for p in dest.rglob("*") if p.is_symlink()]
    if links or (dest / CHECKPOINT_DIR).is_symlink():
        raise ParkError(f"{dest} holds symbolic links ({links[0] if links else dest / CHECKPOINT_DIR}); refusing")
    if replace:
        return
    if (dest / MARKER).is_file() and (dest / MARKER).read_bytes() != marker:
        raise ParkError(f"{dest} parks another run (its {MARKER} differs); pass --replace to replace it")
    parked_step = json.loads((dest / PARKED).read_text()).get("step", -1)
    if parked_step > step:
        raise ParkError(f"{dest} parks step {parked_step}, later than {step}; pass --replace to replace it")


def park(run: Path, dest: Path, replace: bool = False) -> Path:
    """Copy ``run``'s resume point into ``dest``; return the weights file copied."""
    weights, blobs = _read_latest(run)
    step = _step_of(weights)
    _check_dest(dest, blobs[MARKER], step, replace)
    ckpt_dir = dest / CHECKPOINT_DIR
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    names = [p.name for p in checkpoint_files(weights)]
    for name in names:
        write_bytes(ckpt_dir / name, blobs[name], overwrite=True)
    copied = ckpt_dir / weights.name
    load_training_state(training_state_path(copied), expected_sha256=load_checkpoint(copied).sha256)
    for name in RUN_FILES:
        write_bytes(dest / name, blobs[name], overwrite=True)
    write_bytes(ckpt_dir / LATEST, (weights.name.split(".")[0] + "\n").encode(), overwrite=True)  # as training does
    write_json(dest / PARKED, {"step": step, "source": str(run), "checkpoint": weights.name,
                               "parked_unix_s": round(time.time(), 2), "git_revision": git_revision()},
               overwrite=True)
    for old in ckpt_dir.iterdir():  # only now: the older checkpoint
        if old.name not in {*names, LATEST}:
            old.unlink()
    return weights


def restore(parked: Path, run: Path) -> int:
    """Check a park and copy it into a new run directory; return its step."""
    if not (parked / PARKED).is_file():
        raise ParkError(f"{parked} is not a park (no {PARKED})")
    if run.exists() or run.is_symlink():
        raise ParkError(f"{run} exists; restore into a new directory (a run is never overwritten)")
    weights = resolve_checkpoint(parked)
    load_training_state(training_state_path(weights), expected_sha256=load_checkpoint(weights).sha256)
    missing = [name for name in RUN_FILES if not (parked / name).is_file()]
    if missing:
        raise ParkError(f"{parked} lacks {', '.join(missing)}")
    shutil.copytree(parked, run, ignore=shutil.ignore_patterns(PARKED))  # refuses a directory made meanwhile
    return _step_of(weights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the run directory (or, with --restore, the park)")
    parser.add_argument("dest", type=Path, help="the park (or, with --restore, the new run directory)")
    parser.add_argument("--restore", action="store_true", help="copy a park back into a new run directory")
    parser.add_argument("--replace", action="store_true", help="park over another run's park or a later step")
    args = parser.parse_args()
    try:
        if args.restore:
            step = restore(args.source, args.dest)
            print(f"restored step {step} into {args.dest}; resume it with: sdit train --resume {args.dest}")
        else:
            weights = park(args.source, args.dest, replace=args.replace)
            print(f"parked {weights.name} of {args.source} in {args.dest}")
    except (ParkError, CheckpointError, OSError, ValueError) as err:
        raise SystemExit(f"park_run.py: {err}") from None


if __name__ == "__main__":
    main()
