"""Train the domain feature network: a small CNN classifier, shipped with its provenance.

    nice -n 10 .venv/bin/python scripts/train_classifier.py --threads 2 --out checkpoints/fmnist-classifier

Trains on the train split for a fixed number of epochs (no model selection), measures the
accuracy on the held-out test split, and writes OUT/model.safetensors (weights, config in the
header) and OUT/provenance.json (command, accuracy, date, data files and their sha256,
settings, per-epoch loss, time). `sdit evaluate` reads its penultimate layer as features.
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

import torch

from sdit.artifacts import OverwriteError, write_json
from sdit.checkpoint import git_revision
from sdit.data import DATASETS, FASHION_MNIST_DIR, DatasetError, load_dataset
from sdit.heap import retain_freed_memory
from sdit.quality.classifier import ClassifierConfig, TrainSettings, accuracy, save_classifier, train_classifier


def _file_digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def main(argv: list[str] | None = None) -> int:
    retain_freed_memory()  # as the sdit command does (sdit/heap.py; SDIT_HEAP_RETAIN=0: glibc's defaults)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist", choices=DATASETS)
    parser.add_argument("--data-dir", type=Path, default=None, help="Folder of the standard files (default place "
                        "for fashion-mnist: the Debian package dataset-fashion-mnist).")
    parser.add_argument("--out", type=Path, required=True, help="Directory to write model.safetensors and "
                        "provenance.json into.")
    parser.add_argument("--epochs", type=int, default=TrainSettings.epochs)
    parser.add_argument("--batch-size", type=int, default=TrainSettings.batch_size)
    parser.add_argument("--lr", type=float, default=TrainSettings.lr)
    parser.add_argument("--seed", type=int, default=TrainSettings.seed)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
    parser.add_argument("--min-accuracy", type=float, default=0.9, help="Fail (exit 1, nothing written) below "
                        "this test accuracy.")
    parser.add_argument("--overwrite", action="store_true", help="Replace OUT's files if they exist.")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or not args.lr > 0:
        parser.error("--epochs and --batch-size must be >= 1 and --lr > 0")
    weights, provenance = args.out / "model.safetensors", args.out / "provenance.json"
    for path in (weights, provenance):
        if path.exists() and not args.overwrite:
            print(f"error: {path} exists; pass --overwrite to replace it", file=sys.stderr)
            return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        train = load_dataset(args.dataset, "train", args.data_dir)
        test = load_dataset(args.dataset, "test", args.data_dir)
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    config = ClassifierConfig(in_channels=train.images.shape[1])
    settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    model, record = train_classifier(train.images, train.labels, config, settings, log=print)
    test_accuracy = accuracy(model, test.images, test.labels)
    print(f"test accuracy {100 * test_accuracy:.2f} % on {len(test.labels)} held-out images")
    if test_accuracy < args.min_accuracy:
        print(f"error: test accuracy {test_accuracy:.4f} is below --min-accuracy {args.min_accuracy}", file=sys.stderr)
        return 1
    data_dir = args.data_dir if args.data_dir is not None else FASHION_MNIST_DIR
    info = {
        "command": shlex.join(["python", "scripts/train_classifier.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_revision": git_revision(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "data": {"dataset": args.dataset, "directory": str(data_dir), "train_images": len(train.labels),
                 "test_images": len(test.labels), "files_sha256": _file_digests(Path(data_dir))},
        "config": config.__dict__,
        "settings": settings.__dict__,
        "test_accuracy": test_accuracy,
        "test_accuracy_note": "fraction of the test split classified correctly (eval mode); the test split was "
                              "never used in training or to choose a model",
        "features": f"penultimate layer, {config.feature_dim} ReLU units (ImageClassifier.features)",
        "history": record["history"],
        "train_seconds": record["train_seconds"],
    }
    try:
        save_classifier(model, weights, overwrite=args.overwrite)
        write_json(provenance, info, overwrite=args.overwrite)
    except OverwriteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {weights} and {provenance}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
