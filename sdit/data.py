"""Datasets from their standard files: IDX (MNIST, Fashion-MNIST) and CIFAR-10 binary.

Nothing is downloaded. Fashion-MNIST is found in the Debian package
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) unless a
directory is given; MNIST and CIFAR-10 come from a directory the user gives.
Images come back as float32 (B, C, 28, 28) scaled to [-1, 1].
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
IMAGE_SIZE = 28
DATASETS = ("fashion-mnist", "mnist", "cifar10")

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CIFAR_FILES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
_CIFAR_RECORD = 1 + 3 * 32 * 32


class DatasetError(ValueError):
    """A dataset is missing or malformed; the message says what was expected where."""


@dataclass(frozen=True)
class ImageSet:
    """Images (B, C, 28, 28) in [-1, 1] and integer labels (B,)."""

    images: Tensor
    labels: Tensor


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into an array of its declared dtype and shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise DatasetError(f"cannot read IDX file {path}: {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetError(f"{path} is not an IDX file (bad magic number)")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DatasetError(
            f"{path}: IDX header promises {expected} bytes of data for shape {shape}, "
            f"file has {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise DatasetError(f"missing {stem}[.gz] in {directory}")


def _to_unit_range(images: np.ndarray) -> Tensor:
    return torch.from_numpy(images.astype(np.float32)) / 127.5 - 1.0


def load_idx_dataset(directory: Path, split: str) -> ImageSet:
    """MNIST-format IDX images and labels from ``directory`` (plain or .gz files)."""
    image_stem, label_stem = _IDX_FILES[split]
    images = read_idx(_find(directory, image_stem))
    labels = read_idx(_find(directory, label_stem))
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or images.dtype != np.uint8:
        raise DatasetError(
            f"{directory}/{image_stem}: expected uint8 images of 28x28, got {images.dtype} {images.shape}"
        )
    if labels.shape != (images.shape[0],):
        raise DatasetError(f"{directory}: {images.shape[0]} images but labels of shape {labels.shape}")
    return ImageSet(images=_to_unit_range(images)[:, None], labels=torch.from_numpy(labels.astype(np.int64)))


def load_cifar10(directory: Path, split: str) -> ImageSet:
    """CIFAR-10 binary batches (``cifar-10-batches-bin``), resized to 28x28 as in the paper (§IV-A)."""
    chunks = []
    for name in _CIFAR_FILES[split]:
        path = directory / name
        if not path.is_file():
            raise DatasetError(
                f"missing {name} in {directory} (expected the binary CIFAR-10 version, cifar-10-batches-bin)"
            )
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % _CIFAR_RECORD:
            raise DatasetError(
                f"{path}: size {raw.size} is not a multiple of the {_CIFAR_RECORD}-byte CIFAR-10 record"
            )
        chunks.append(raw.reshape(-1, _CIFAR_RECORD))
    records = np.concatenate(chunks)
    labels = torch.from_numpy(records[:, 0].astype(np.int64))
    images = _to_unit_range(records[:, 1:].reshape(-1, 3, 32, 32))  # (B, 3, 32, 32)
    images = torch.nn.functional.interpolate(
        images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", antialias=True, align_corners=False
    )  # (B, 3, 28, 28)
    return ImageSet(images=images.clamp(-1, 1), labels=labels)


def fit_channels(images: Tensor, channels: int) -> Tensor:
    """A grey batch (B, 1, H, W) repeated to ``channels`` (the authors' MNIST models take 3); else unchanged."""
    if images.shape[1] == channels:
        return images
    if images.shape[1] == 1:
        return images.expand(-1, channels, -1, -1)  # (B, C, H, W)
    raise ValueError(f"images have {images.shape[1]} channels, the model takes {channels}")


def load_dataset(name: str, split: str = "train", data_dir: Path | str | None = None) -> ImageSet:
    """Load ``name`` (one of :data:`DATASETS`) from ``data_dir`` or its default place.

    Raises:
        DatasetError: unknown name or split, missing directory, or malformed files.
    """
    if split not in _IDX_FILES:
        raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
    if name == "fashion-mnist":
        directory = Path(data_dir) if data_dir is not None else FASHION_MNIST_DIR
        hint = "install the Debian package dataset-fashion-mnist (scripts/setup.sh does) or pass --data-dir"
    elif name in ("mnist", "cifar10"):
        if data_dir is None:
            raise DatasetError(f"{name}: no --data-dir given; nothing ships it, bring the standard files")
        directory = Path(data_dir)
        hint = "pass the folder holding the standard files with --data-dir"
    else:
        raise DatasetError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    if not directory.is_dir():
        raise DatasetError(f"{name}: directory {directory} does not exist; {hint}")
    if name == "cifar10":
        return load_cifar10(directory, split)
    return load_idx_dataset(directory, split)
