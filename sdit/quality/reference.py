"""Reference features of real images, cached on disk.

A reference set is the first ``num`` images of a dataset split (:func:`sdit.data.load_dataset`:
Fashion-MNIST from the Debian package, MNIST and CIFAR-10 from files the user gives). Its
features are cached in ``$SDIT_CACHE`` (default ``~/.cache/sdit``) under ``reference/``, one
safetensors file per (feature network sha256, images sha256): a changed weights file or a
different image set never reuses stale features. Every write goes through :mod:`sdit.artifacts`.
The whole feature array is kept (not just mean and covariance): KID and precision / recall need it.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from sdit import artifacts
from sdit.data import FASHION_MNIST_DIR, load_dataset
from sdit.quality.features import FeatureNetwork, extract_features


@dataclass(frozen=True)
class ReferenceSet:
    """Real images to compare against, and where they came from."""

    images: Tensor  # (N, C, 28, 28) in [-1, 1]
    dataset: str
    split: str
    directory: str
    total: int  # images in the split; the set is the first len(images) of them

    @property
    def sha256(self) -> str:
        """sha256 of the images as float32 bytes, with their shape."""
        return images_sha256(self.images)

    def describe(self) -> dict[str, object]:
        """The JSON record of this set (no tensors)."""
        return {"dataset": self.dataset, "split": self.split, "directory": self.directory,
                "num_images": len(self.images), "split_images": self.total, "images_sha256": self.sha256,
                "selection": f"first {len(self.images)} of {self.total}"}


def images_sha256(images: Tensor) -> str:
    """sha256 of (N, C, H, W) images as contiguous float32 bytes, prefixed by the shape."""
    data = images.detach().float().cpu().contiguous()
    digest = hashlib.sha256(repr(tuple(data.shape)).encode())
    digest.update(data.numpy().tobytes())
    return digest.hexdigest()


def load_reference(dataset: str, split: str = "test", data_dir: Path | str | None = None,
                   num: int | None = None) -> ReferenceSet:
    """The first ``num`` images (all when None) of ``dataset``'s ``split``.

    Raises:
        sdit.data.DatasetError: missing or malformed files.
        ValueError: ``num`` below 2 or above the split's size.
    """
    data = load_dataset(dataset, split, data_dir)
    total = len(data.images)
    if num is not None and not 2 <= num <= total:
        raise ValueError(f"reference size must be in [2, {total}] for {dataset} {split}, got {num}")
    directory = Path(data_dir) if data_dir is not None else FASHION_MNIST_DIR
    images = data.images if num is None else data.images[:num]
    return ReferenceSet(images=images, dataset=dataset, split=split, directory=str(directory), total=total)


def cache_dir() -> Path:
    """``$SDIT_CACHE``, else ``~/.cache/sdit``."""
    env = os.environ.get("SDIT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "sdit"


def cache_path(network: FeatureNetwork, reference: ReferenceSet) -> Path:
    """Where the features of ``reference`` under ``network`` are cached."""
    name = f"{network.kind}-{network.sha256[:16]}-{reference.dataset}-{reference.split}-{len(reference.images)}-" \
           f"{reference.sha256[:16]}.safetensors"
    return cache_dir() / "reference" / name


def _read_cache(path: Path, network: FeatureNetwork, reference: ReferenceSet) -> np.ndarray | None:
    try:
        features = load_file(str(path))["features"].numpy()
    except (OSError, SafetensorError, KeyError):
        return None
    if features.shape != (len(reference.images), network.dim):
        return None
    return features


def reference_features(network: FeatureNetwork, reference: ReferenceSet,
                       use_cache: bool = True) -> tuple[np.ndarray, dict[str, object]]:
    """Features (N, d) of the reference images, from the cache when there, else computed and cached.

    Returns:
        The features and a record: cache file, whether it was a hit, seconds spent computing.
    """
    path = cache_path(network, reference)
    if use_cache and path.is_file():
        cached = _read_cache(path, network, reference)
        if cached is not None:
            return cached, {"cache": str(path), "cache_hit": True}
    start = time.perf_counter()
    features = extract_features(network, reference.images)
    seconds = time.perf_counter() - start
    if use_cache:  # an unreadable cache file is ours to replace
        meta = {"feature_sha256": network.sha256, "images_sha256": reference.sha256, "dataset": reference.dataset,
                "split": reference.split, "num_images": str(len(reference.images))}
        artifacts.save_tensors({"features": torch.from_numpy(features)}, path, metadata=meta, overwrite=True)
    return features, {"cache": str(path) if use_cache else None, "cache_hit": False, "seconds": seconds}
