"""Feature networks: Inception-v3 against values recorded from the shipped weights, the domain
classifier's accuracy on the Fashion-MNIST test set, and the reference cache.

Record the Inception values once (they are golden, not regenerated per run):
``python -m tests.sdit.test_quality_features --record``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sdit.artifacts import save_tensors
from sdit.data import ImageSet
from sdit.quality.classifier import accuracy, load_classifier
from sdit.quality.features import (
    DEFAULT_CLASSIFIER,
    INCEPTION_SHA256,
    FeatureError,
    default_inception_path,
    extract_features,
    file_sha256,
    inception_input,
    load_domain,
    load_inception,
)
from sdit.quality.reference import ReferenceSet, cache_path, reference_features

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "inception-fixed-images.safetensors"


def fixed_images() -> torch.Tensor:
    """Two deterministic 28x28 grayscale images in [-1, 1]: a checkerboard and a disk of stripes."""
    y, x = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    checker = ((x // 4 + y // 4) % 2) * 2 - 1
    radius = ((x - 13.5) ** 2 + (y - 13.5) ** 2).sqrt()
    stripes = torch.sin(x / 2 + y / 3) * (radius < 12).float()
    return torch.stack([checker, stripes])[:, None]  # (2, 1, 28, 28)


def test_inception_input_preprocessing() -> None:
    images = torch.tensor([-1.0, 0.0, 1.0, 3.0]).view(4, 1, 1, 1).expand(4, 1, 28, 28)
    out = inception_input(images)
    assert out.shape == (4, 3, 299, 299)
    # Levels 0, round(127.5) = 128, 255, 255 (clamped), scaled as (v - 128) / 128.
    assert out[:, 0, 0, 0].tolist() == [-1.0, 0.0, 127 / 128, 127 / 128]
    assert torch.equal(out[:, 0], out[:, 2])  # gray -> R = G = B
    with pytest.raises(FeatureError, match="1 or 3"):
        inception_input(torch.zeros(1, 2, 28, 28))


def test_inception_features_match_recorded_values() -> None:
    path = default_inception_path()
    assert file_sha256(path) == INCEPTION_SHA256
    network = load_inception(path)
    assert network.sha256 == INCEPTION_SHA256 and network.dim == 2048
    got = extract_features(network, fixed_images())
    golden = load_file(str(GOLDEN))["features"].numpy()
    assert got.shape == golden.shape == (2, 2048)
    np.testing.assert_allclose(got, golden, rtol=1e-3, atol=1e-4)  # across CPUs and kernels
    assert float(np.abs(golden - golden[0]).max()) > 0.5  # the two images give distinct features


def test_domain_classifier_accuracy_on_fashion_mnist_test(fashion_test: ImageSet) -> None:
    provenance = json.loads((DEFAULT_CLASSIFIER / "provenance.json").read_text())
    model = load_classifier(DEFAULT_CLASSIFIER)
    acc = accuracy(model, fashion_test.images, fashion_test.labels)
    assert acc >= 0.90
    assert acc == pytest.approx(provenance["test_accuracy"], abs=2e-4)  # two images of 10,000
    network = load_domain()
    assert network.sha256 == file_sha256(DEFAULT_CLASSIFIER / "model.safetensors")
    feats = extract_features(network, fashion_test.images[:7])
    assert feats.shape == (7, 128) and feats.dtype == np.float32 and (feats >= 0).all()  # ReLU layer


def test_domain_network_refuses_other_channel_counts() -> None:
    with pytest.raises(FeatureError, match="1-channel"):
        extract_features(load_domain(), torch.zeros(2, 3, 28, 28))
    with pytest.raises(FeatureError, match="do not exist"):
        load_domain(Path("/nonexistent/classifier"))


def test_reference_features_are_cached_by_network_and_images(
    fashion_test: ImageSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SDIT_CACHE", str(tmp_path))
    network = load_domain()
    ref = ReferenceSet(images=fashion_test.images[:40], dataset="fashion-mnist", split="test", directory="d",
                       total=10000)
    first, info = reference_features(network, ref)
    assert info["cache_hit"] is False and info["cache"] == f"$SDIT_CACHE/reference/{cache_path(network, ref).name}"
    second, info2 = reference_features(network, ref)
    assert info2["cache_hit"] is True
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, extract_features(network, ref.images))
    other = ReferenceSet(images=fashion_test.images[1:41], dataset="fashion-mnist", split="test", directory="d",
                         total=10000)
    assert cache_path(network, other) != cache_path(network, ref)  # keyed by the images' hash too
    assert network.sha256[:16] in cache_path(network, ref).name
    cache_path(network, ref).write_bytes(b"torn")  # an unreadable cache file is recomputed and replaced
    third, info3 = reference_features(network, ref)
    assert info3["cache_hit"] is False
    np.testing.assert_array_equal(first, third)


def _record() -> None:
    features = extract_features(load_inception(), fixed_images())
    save_tensors({"features": torch.from_numpy(features)}, GOLDEN, overwrite=True,
                 metadata={"weights_sha256": INCEPTION_SHA256, "images": "tests/sdit/test_quality_features.py:"
                           "fixed_images", "torch": torch.__version__})
    print(f"wrote {GOLDEN}")


if __name__ == "__main__" and "--record" in sys.argv:
    _record()


def test_the_shipped_classifier_is_recorded_by_its_path_in_the_checkout() -> None:
    from sdit.quality.features import load_domain

    assert load_domain().path == "checkpoints/fmnist-classifier/model.safetensors"  # names no machine
