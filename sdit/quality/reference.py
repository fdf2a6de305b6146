"""Reference features of real images, cached on disk.

A reference set is the first ``num`` images of a dataset split (:func:`sdit.data.load_dataset`:
Fashion-MNIST from the Debian package, MNIST and CIFAR-10 from files the user gives). Its
features are cached in ``$SDIT_CACHE`` (default ``~/.cache/sdit``) under ``reference/``, one
safetensors file per (feature network sha256, images sha256): a changed weights file or a
different image set never reuses stale features. Each file also records the sha256 of the features it
holds and the full hashes it was computed from; a file whose features no longer match (a torn or edited
file) is recomputed and replaced, never used. The cache is an optimisation: a cache that cannot be read
or written is reported in the returned record and the features are computed anyway. Every write goes
through :mod:`sdit.artifacts`. The whole feature array is kept (not just mean and covariance): KID and
precision / recall need it.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
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


def _features_sha256(features: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(features, dtype=np.float32).tobytes()).hexdigest()


def _read_cache(path: Path, network: FeatureNetwork, reference: ReferenceSet) -> tuple[np.ndarray | None, str]:
    """The cached features, or None and why they cannot be used."""
    try:
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            features = f.get_tensor("features")
    except (OSError, SafetensorError, KeyError, ValueError) as err:
        return None, f"unreadable ({type(err).__name__})"
    expected = {"feature_sha256": network.sha256, "images_sha256": reference.sha256}
    if any(meta.get(k) != v for k, v in expected.items()):
        return None, "computed from other weights or images"
    if features.shape != (len(reference.images), network.dim) or features.dtype != np.float32:
        return None, f"of shape {features.shape}, not ({len(reference.images)}, {network.dim})"
    if meta.get("features_sha256") != _features_sha256(features):
        return None, "features do not match their recorded sha256"
    return features, ""


def reference_features(network: FeatureNetwork, reference: ReferenceSet,
                       use_cache: bool = True) -> tuple[np.ndarray, dict[str, object]]:
    """Features (N, d) of the reference images, from the cache when there, else computed and cached.

    Returns:
        The features and a record: cache file, whether it was a hit, seconds spent computing, and
        ``cache_warning`` where a cached file was rejected (and replaced) or the cache could not be
        written: the features are right either way.
    """
    record: dict[str, object] = {"cache": None, "cache_hit": False}
    path = None
    if use_cache:
        try:
            path = cache_path(network, reference)
            record["cache"] = f"$SDIT_CACHE/{path.relative_to(cache_dir()).as_posix()}"  # names no machine
            exists = path.is_file()
        except OSError as err:  # $SDIT_CACHE names something that cannot hold a cache
            exists, record["cache_warning"] = False, f"cache not usable: {err.strerror or err}"
            path = None
        if exists:
            cached, why = _read_cache(path, network, reference)
            if cached is not None:
                return cached, {**record, "cache_hit": True}
            record["cache_warning"] = f"cached features rejected ({why}); recomputed"
    start = time.perf_counter()
    features = np.ascontiguousarray(extract_features(network, reference.images), dtype=np.float32)
    record["seconds"] = time.perf_counter() - start
    if path is not None:  # a rejected cache file is ours to replace
        meta = {"feature_sha256": network.sha256, "images_sha256": reference.sha256, "dataset": reference.dataset,
                "split": reference.split, "num_images": str(len(reference.images)),
                "features_sha256": _features_sha256(features)}
        try:
            artifacts.save_tensors({"features": torch.from_numpy(features)}, path, metadata=meta, overwrite=True)
        except (OSError, ValueError) as err:  # full, read-only or odd cache: the features stand without it
            why = getattr(err, "strerror", None) or str(err).splitlines()[0]
            record["cache_warning"] = f"features not cached ({why})"
    return features, record
