"""A small CNN image classifier whose penultimate layer is the domain feature space.

Inception-v3 features (the paper's FID) were learned on ImageNet photographs; a 28x28
garment upsampled to 299x299 is far from them. The domain features come from a classifier
trained here on the images the models learn (Fashion-MNIST by default): two 3x3 conv
blocks and a fully connected layer of ``feature_dim`` units (ReLU), the layer the metrics
read, before the class logits. The weights are a safetensors file whose header holds the
config, so loading it runs no code.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from torch import Tensor, nn
from torch.nn import functional as F

from sdit import artifacts

FORMAT = "sdit-classifier/1"
WEIGHTS = "model.safetensors"  # the weights file of a classifier directory
_HEADER_KEY = "sdit_classifier"


class ClassifierError(ValueError):
    """A classifier file is missing, corrupt, or does not fit its config (one-line message)."""


@dataclass(frozen=True)
class ClassifierConfig:
    """Shape of the classifier.

    Attributes:
        in_channels: Image channels C (1 for (Fashion-)MNIST, 3 for CIFAR-10).
        image_size: Input height = width (28; two 2x2 poolings leave image_size / 4).
        width: Channels of the first conv block (the second has twice as many).
        feature_dim: Units of the penultimate layer: the feature dimension.
        num_classes: Output classes.
        dropout: Dropout before the logits, in training only.
    """

    in_channels: int = 1
    image_size: int = 28
    width: int = 32
    feature_dim: int = 128
    num_classes: int = 10
    dropout: float = 0.3

    def __post_init__(self) -> None:
        if self.image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 (two 2x2 poolings), got {self.image_size}")


class ImageClassifier(nn.Module):
    """conv3x3-ReLU-pool, conv3x3-ReLU-pool, Linear-ReLU (features), Linear (logits)."""

    def __init__(self, config: ClassifierConfig = ClassifierConfig()) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.conv1 = nn.Conv2d(config.in_channels, w, 3, padding=1)
        self.conv2 = nn.Conv2d(w, 2 * w, 3, padding=1)
        side = config.image_size // 4
        self.fc = nn.Linear(2 * w * side * side, config.feature_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def features(self, x: Tensor) -> Tensor:
        """(B, C, H, W) images in [-1, 1] -> (B, feature_dim) penultimate activations."""
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (B, w, H/2, W/2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)  # (B, 2w, H/4, W/4)
        return F.relu(self.fc(h.flatten(1)))  # (B, feature_dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, num_classes) logits."""
        return self.head(self.dropout(self.features(x)))


@dataclass(frozen=True)
class TrainSettings:
    """How the classifier is trained (AdamW, cosine learning rate, fixed epochs, no model selection)."""

    epochs: int = 6
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0


def train_classifier(
    images: Tensor,
    labels: Tensor,
    config: ClassifierConfig,
    settings: TrainSettings,
    log: Callable[[str], None] | None = None,
) -> tuple[ImageClassifier, dict[str, Any]]:
    """Train a classifier on (B, C, H, W) images in [-1, 1]; deterministic for a seed on one machine.

    Returns:
        The model (eval mode) and a record of the training: per-epoch loss and training accuracy, seconds.
    """
    torch.manual_seed(settings.seed)
    model = ImageClassifier(config)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(images) / settings.batch_size)
    total = settings.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    generator = torch.Generator().manual_seed(settings.seed)
    history = []
    start = time.perf_counter()
    for epoch in range(settings.epochs):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        loss_sum, correct = 0.0, 0
        for i in range(steps_per_epoch):
            idx = order[i * settings.batch_size : (i + 1) * settings.batch_size]
            logits = model(images[idx])
            loss = F.cross_entropy(logits, labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == labels[idx]).sum())
        record = {"epoch": epoch + 1, "loss": loss_sum / len(images), "train_accuracy": correct / len(images),
                  "seconds": time.perf_counter() - start}
        history.append(record)
        if log is not None:
            log(f"epoch {epoch + 1}/{settings.epochs}: loss {record['loss']:.4f}, "
                f"train accuracy {100 * record['train_accuracy']:.2f} %, {record['seconds']:.0f} s")
    model.eval()
    return model, {"history": history, "train_seconds": time.perf_counter() - start}


@torch.inference_mode()
def predict(model: ImageClassifier, images: Tensor, batch_size: int = 1000) -> Tensor:
    """Class indices (B,) of (B, C, H, W) images, in batches."""
    model.eval()
    return torch.cat([model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])


def accuracy(model: ImageClassifier, images: Tensor, labels: Tensor) -> float:
    """Fraction of ``images`` classified as ``labels``."""
    return float((predict(model, images) == labels).float().mean())


def save_classifier(model: ImageClassifier, path: Path | str, overwrite: bool = False) -> Path:
    """Write the weights with the config in the safetensors header, atomically."""
    meta = {_HEADER_KEY: json.dumps({"format": FORMAT, "config": asdict(model.config)}, sort_keys=True)}
    return artifacts.save_tensors(model.state_dict(), path, metadata=meta, overwrite=overwrite)


def load_classifier(path: Path | str) -> ImageClassifier:
    """Load a classifier from its safetensors file (or a directory holding ``model.safetensors``), eval mode.

    Raises:
        ClassifierError: missing, unreadable or mismatched file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS
    if not path.is_file():
        raise ClassifierError(f"classifier weights {path} do not exist")
    try:
        raw = path.read_bytes()
        tensors = safetensors_load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + header_len])
        meta = json.loads(header["__metadata__"][_HEADER_KEY])
    except (OSError, SafetensorError, KeyError, TypeError, ValueError) as err:
        raise ClassifierError(f"{path} is not a classifier file written by sdit ({err})") from None
    if meta.get("format") != FORMAT:
        raise ClassifierError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    model = ImageClassifier(ClassifierConfig(**meta["config"]))
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise ClassifierError(f"{path}: weights do not fit the config in its header ({first})") from None
    return model.eval()
