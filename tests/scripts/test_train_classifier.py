"""scripts/train_classifier.py on a tiny IDX dataset the test writes: files, provenance, refusals."""

from __future__ import annotations

import gzip
import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from sdit.data import load_dataset
from sdit.quality.classifier import ClassifierError, accuracy, load_classifier
from sdit.quality.features import file_sha256

_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_classifier.py"
_spec = importlib.util.spec_from_file_location("train_classifier", _SCRIPT)
train_classifier = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_classifier)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def _two_class_mnist(directory: Path) -> Path:
    """Bright-left vs bright-right images, labels 0 / 1: learnable in one epoch."""
    rng = np.random.default_rng(0)
    directory.mkdir()
    for split, n in (("train", 256), ("t10k", 64)):
        labels = np.arange(n) % 2
        images = rng.integers(0, 60, (n, 28, 28))
        for i, label in enumerate(labels):
            images[i, :, 14 * label : 14 * label + 14] += 180
        _write_idx(directory / f"{split}-images-idx3-ubyte.gz", images)
        _write_idx(directory / f"{split}-labels-idx1-ubyte.gz", labels)
    return directory


def test_train_classifier_writes_weights_and_provenance(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data_dir = _two_class_mnist(tmp_path / "data")
    out = tmp_path / "clf"
    argv = ["--dataset", "mnist", "--data-dir", str(data_dir), "--out", str(out), "--epochs", "2",
            "--batch-size", "32"]
    assert train_classifier.main(argv) == 0
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["command"].startswith("python scripts/train_classifier.py --dataset mnist")
    assert provenance["data"]["train_images"] == 256 and provenance["data"]["test_images"] == 64
    assert set(provenance["data"]["files_sha256"]) == {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                                      "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}
    assert len(provenance["history"]) == 2
    model = load_classifier(out)
    test = load_dataset("mnist", "test", data_dir)
    assert accuracy(model, test.images, test.labels) == provenance["test_accuracy"]
    assert provenance["test_accuracy"] >= 0.9
    digest = file_sha256(out / "model.safetensors")
    assert train_classifier.main(argv) == 2  # exists, no --overwrite: nothing replaced
    assert file_sha256(out / "model.safetensors") == digest
    assert "exists; pass --overwrite" in capsys.readouterr().err


def test_accuracy_floor_and_corrupt_weights(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data_dir = _two_class_mnist(tmp_path / "data")
    out = tmp_path / "clf"
    argv = ["--dataset", "mnist", "--data-dir", str(data_dir), "--out", str(out), "--epochs", "1",
            "--min-accuracy", "1.01"]
    assert train_classifier.main(argv) == 1
    assert not out.exists()
    assert "below --min-accuracy" in capsys.readouterr().err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors")
    with pytest.raises(ClassifierError, match="not a classifier file"):
        load_classifier(bad)
