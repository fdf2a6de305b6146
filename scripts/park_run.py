"""Park a training run's resume point in the repository, or restore it, so that a run outlives its machine.

    .venv/bin/python scripts/park_run.py runs/sdit-small-sd-fmnist parked/sdit-small-sd-fmnist
    .venv/bin/python scripts/park_run.py --restore parked/sdit-small-sd-fmnist runs/sdit-small-sd-fmnist

Parking copies what ``sdit train`` needs to resume exactly, and nothing else: the run marker, run.json,
metrics.jsonl and the latest checkpoint (weights, metadata, training state: about 13 MB for
sdit-small-sd), and writes DEST/PARKED.json (step, time, source). DEST must be new or a park
(it holds PARKED.json); a park's older checkpoint is replaced. The writing run may keep going: the
checkpoint copied is the one ``latest`` names, whose files are complete before ``latest`` moves.

Restoring copies a park into a run directory that does not exist yet (never over a run); then the
run's own ``sdit train`` command, with ``--out`` at that directory, resumes it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sdit.artifacts import write_bytes, write_json  # noqa: E402
from sdit.checkpoint import CHECKPOINT_DIR, LATEST, resolve_checkpoint, training_state_path  # noqa: E402
from sdit.rundir import MARKER  # noqa: E402

PARKED = "PARKED.json"
RUN_FILES = (MARKER, "run.json", "metrics.jsonl")


def checkpoint_files(weights: Path) -> list[Path]:
    """The three files of one checkpoint: weights, metadata, training state."""
    return [weights, weights.with_suffix(".json"), training_state_path(weights)]


def park(run: Path, dest: Path) -> Path:
    """Copy ``run``'s resume point into ``dest`` (new, or an earlier park of it); return the weights copied."""
    if dest.exists() and any(dest.iterdir()) and not (dest / PARKED).is_file():
        raise SystemExit(f"park_run.py: {dest} exists and is not a park (no {PARKED}); choose a new directory")
    weights = resolve_checkpoint(run)  # the file ``latest`` names, complete
    files = checkpoint_files(weights)
    missing = [p for p in files + [run / name for name in RUN_FILES] if not p.is_file()]
    if missing:
        raise SystemExit(f"park_run.py: {run} lacks {', '.join(map(str, missing))}")
    (dest / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        write_bytes(dest / name, (run / name).read_bytes(), overwrite=True)
    for path in files:
        write_bytes(dest / CHECKPOINT_DIR / path.name, path.read_bytes(), overwrite=True)
    keep = {p.name for p in files} | {LATEST}
    for old in (dest / CHECKPOINT_DIR).iterdir():
        if old.name not in keep:
            old.unlink()
    write_bytes(dest / CHECKPOINT_DIR / LATEST, (weights.stem + "\n").encode(), overwrite=True)  # as training writes it
    step = int(weights.stem.split("-")[-1])
    write_json(dest / PARKED, {"step": step, "source": str(run), "parked_unix_s": round(time.time(), 2),
                               "checkpoint": weights.name}, overwrite=True)
    return weights


def restore(parked: Path, run: Path) -> int:
    """Copy a park into a new run directory; return its step."""
    if not (parked / PARKED).is_file():
        raise SystemExit(f"park_run.py: {parked} is not a park (no {PARKED})")
    if run.exists():
        raise SystemExit(f"park_run.py: {run} exists; restore into a new directory (a run is never overwritten)")
    shutil.copytree(parked, run, ignore=shutil.ignore_patterns(PARKED))
    return int(resolve_checkpoint(run).stem.split("-")[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the run directory (or, with --restore, the park)")
    parser.add_argument("dest", type=Path, help="the park (or, with --restore, the new run directory)")
    parser.add_argument("--restore", action="store_true", help="copy a park back into a new run directory")
    args = parser.parse_args()
    if args.restore:
        step = restore(args.source, args.dest)
        print(f"restored step {step} into {args.dest}; rerun its sdit train command with --out {args.dest}")
    else:
        weights = park(args.source, args.dest)
        print(f"parked {weights.name} of {args.source} in {args.dest}")


if __name__ == "__main__":
    main()
