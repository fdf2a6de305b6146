"""The reference-feature cache is verified before use and never costs the features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sdit.data import ImageSet
from sdit.quality.features import extract_features, load_domain
from sdit.quality.reference import ReferenceSet, reference_features


@pytest.fixture(scope="module")
def network():
    return load_domain()


@pytest.fixture
def ref(fashion_test: ImageSet) -> ReferenceSet:
    return ReferenceSet(images=fashion_test.images[:24], dataset="fashion-mnist", split="test", directory="d",
                        total=10000)


def test_features_overwritten_with_other_values_are_recomputed(network, ref, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDIT_CACHE", str(tmp_path))
    truth, info = reference_features(network, ref)
    assert info["cache"].startswith("$SDIT_CACHE/reference/")  # the record names no machine
    path = Path(info["cache"].replace("$SDIT_CACHE", str(tmp_path)))
    stored = load_file(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    save_file({"features": torch.randn_like(stored["features"])}, path, metadata=meta)  # right shape, wrong values
    again, info2 = reference_features(network, ref)
    assert info2["cache_hit"] is False and "do not match their recorded sha256" in info2["cache_warning"]
    np.testing.assert_array_equal(again, truth)
    third, info3 = reference_features(network, ref)  # the rejected file was replaced by the right one
    assert info3["cache_hit"] is True and "cache_warning" not in info3
    np.testing.assert_array_equal(third, truth)


@pytest.mark.parametrize("kind", ["a file", "under /proc"])
def test_an_unusable_cache_still_gives_the_features(network, ref, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    kind: str) -> None:
    cache = tmp_path / "not-a-dir" if kind == "a file" else Path("/proc/sdit-cache")  # nobody, root included,
    if kind == "a file":  # can make a folder in either
        cache.write_text("x")
    monkeypatch.setenv("SDIT_CACHE", str(cache))
    features, info = reference_features(network, ref)
    assert info["cache_hit"] is False and "not cached" in info["cache_warning"]
    np.testing.assert_array_equal(features, extract_features(network, ref.images))
