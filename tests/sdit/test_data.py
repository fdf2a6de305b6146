from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from sdit.data import DatasetError, load_dataset, read_idx


def _write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def _mnist_dir(tmp_path: Path, n: int = 5, gz: bool = False) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte", images, gz)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(n) % 10, gz)
    return tmp_path, images


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    directory, images = _mnist_dir(tmp_path, gz=gz)
    data = load_dataset("mnist", "train", directory)
    assert data.images.shape == (5, 1, 28, 28)
    expected = torch.from_numpy(images.astype(np.float32)) / 127.5 - 1
    assert torch.equal(data.images[:, 0], expected)
    assert data.labels.tolist() == [0, 1, 2, 3, 4]


def test_truncated_idx_is_rejected(tmp_path: Path) -> None:
    directory, _ = _mnist_dir(tmp_path)
    path = directory / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DatasetError, match="promises 3920 bytes"):
        read_idx(path)


def test_bad_magic_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DatasetError, match="not an IDX file"):
        read_idx(path)


def test_missing_data_dir_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no --data-dir given"):
        load_dataset("mnist")
    with pytest.raises(DatasetError, match="missing train-images-idx3-ubyte"):
        load_dataset("mnist", "train", tmp_path)
    with pytest.raises(DatasetError, match="unknown dataset 'svhn'"):
        load_dataset("svhn")


def test_cifar10_binary_is_resized_to_28(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        records = rng.integers(0, 256, size=(2, 1 + 3072), dtype=np.uint8)
        records[:, 0] = i
        records[0, 1:] = 255  # first image all white
        records.tofile(tmp_path / f"data_batch_{i}.bin")
    data = load_dataset("cifar10", "train", tmp_path)
    assert data.images.shape == (10, 3, 28, 28)
    assert data.labels.tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert torch.allclose(data.images[0], torch.ones(3, 28, 28))
    (tmp_path / "data_batch_3.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(DatasetError, match="not a multiple of the 3073-byte"):
        load_dataset("cifar10", "train", tmp_path)


def test_real_fashion_mnist(fashion_test) -> None:
    assert fashion_test.images.shape == (10000, 1, 28, 28)
    assert fashion_test.images.min().item() == -1.0 and fashion_test.images.max().item() == 1.0
    assert sorted(fashion_test.labels.unique().tolist()) == list(range(10))
