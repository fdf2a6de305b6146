"""Training the authors' layout: their objective and labels, started from their checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sdit import checkpoint
from sdit.authors import from_authors_state_dict
from sdit.data import ImageSet
from sdit.models import build_model
from sdit.training.config import TrainConfig
from sdit.training.train import train

DATA = Path(__file__).resolve().parents[1] / "data" / "authors-sdit"


def _grey_set(n: int = 8) -> ImageSet:
    g = torch.Generator().manual_seed(5)
    return ImageSet(images=torch.rand(n, 1, 28, 28, generator=g) * 2 - 1, labels=torch.arange(n) % 10)


def test_continue_training_an_authors_checkpoint(tmp_path: Path) -> None:
    weights = load_file(DATA / "tiny.safetensors")
    src = tmp_path / "00099.pt"
    torch.save({"model": weights, "opt": {}, "args": argparse.Namespace(dataset="MNIST")}, src)
    config = TrainConfig(preset="sdit-tiny-authors", batch_size=4, steps=2, warmup_steps=0, weight_decay=0.01,
                         ema_decay=0.0, log_every=1, sample_every=0, sample_num=2, sample_steps=2,
                         device="cpu", init_from=str(src))
    result = train(config, tmp_path / "run", data=_grey_set(), progress=False)
    assert result.step == 2 and result.final_loss is not None and result.final_loss > 0
    trained = checkpoint.load_checkpoint(tmp_path / "run").model_state
    start = from_authors_state_dict(weights, build_model("sdit-tiny-authors"), src)
    assert trained.keys() == start.keys()
    moved = [k for k in start if not torch.equal(trained[k], start[k])]
    assert len(moved) > len(start) // 2  # the optimiser stepped most tensors
    # two small AdamW steps from their weights: still close to them, not a fresh init
    assert all((trained[k] - start[k]).abs().max() < 1e-3 for k in start)


def test_init_from_a_mismatched_checkpoint_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "00099.pt"
    torch.save({"model": load_file(DATA / "tiny.safetensors"), "opt": {}, "args": argparse.Namespace()}, src)
    config = TrainConfig(preset="sdit-mnist-authors", batch_size=4, steps=1, device="cpu", init_from=str(src))
    with pytest.raises(ValueError, match="config differs from the preset"):
        train(config, tmp_path / "run", data=_grey_set(), progress=False)
