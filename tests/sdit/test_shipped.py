"""The checkpoints shipped in checkpoints/ load, match their provenance, and stay small."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sdit.checkpoint import load_model
from sdit.diffusion import Diffusion
from sdit.quality.heldout import held_out_eps_mse

# Diffusion checkpoints; *-classifier directories hold feature networks (tests/sdit/test_quality_features.py).
SHIPPED = sorted(p for p in (Path(__file__).resolve().parents[2] / "checkpoints").glob("*")
                 if p.is_dir() and not p.name.endswith("-classifier"))


def test_something_is_shipped() -> None:
    assert [p.name for p in SHIPPED] == ["dit-small-fmnist", "dit-small-int8-fmnist", "sdit-small-fmnist",
                                         "sdit-small-norecon-fmnist", "sdit-small-sd-fmnist",
                                         "sdit-small-sd-rate0.1-fmnist", "sdit-small-sd-rate0.3-fmnist"]


@pytest.mark.parametrize("directory", [p for p in SHIPPED if p.name.startswith("sdit-small-sd")], ids=lambda p: p.name)
def test_shipped_spike_driven_sdit_accumulates_inside_its_blocks(directory: Path) -> None:
    """On the trained model, strict ACs are at least 90 % of the synaptic ops inside blocks."""
    from profiling.workloads import profile_workload
    from sdit.workload import Workload

    model, meta = load_model(directory)
    assert meta.preset == "sdit-small-sd"
    profile = profile_workload(model, Workload.forward(500, batch_size=1, seed=0), name=directory.name)
    assert profile.in_block_ac_share >= 0.9  # what scripts/spike_driven_table.py prints as "AC share in blocks"
    inside = [r for r in profile.layers if r.block is not None]
    assert sum(r.macs for r in inside) == 0, [r.name for r in inside if r.macs]  # every block layer reads spikes


@pytest.mark.parametrize("directory", SHIPPED, ids=lambda p: p.name)
def test_shipped_checkpoint(directory: Path, fashion_test) -> None:
    weights = directory / "model.safetensors"
    assert weights.stat().st_size < 20 * 2**20
    assert (directory / "samples.png").is_file()
    provenance = json.loads((directory / "provenance.json").read_text())
    for key in ("command", "steps", "training_time_s", "final_loss", "dataset"):
        assert key in provenance
    model, meta = load_model(directory)  # a shipped directory is a checkpoint target
    assert meta.preset == provenance["preset"] and meta.step == provenance["steps"]
    if meta.preset.startswith("sdit"):  # a trained SDiT fires: an untrained one barely does
        assert 0.05 < provenance["mean_firing_rate_ema_ddim50"] < 0.95
        assert set(provenance["firing_rate_ema_ddim50"]) == {
            name for name, module in model.named_modules() if type(module).__name__ == "LIFNode"}
    # Trained: far better than the untrained zero predictor (loss 1.0) on held-out images.
    g = torch.Generator().manual_seed(0)
    x0 = fashion_test.images[:32]
    t = torch.randint(0, 1000, (32,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        loss = Diffusion().loss_at(model, x0, t, noise).item()
    assert loss < 0.1


@pytest.mark.parametrize("directory", SHIPPED, ids=lambda p: p.name)
def test_shipped_held_out_error_is_what_the_weights_give(directory: Path, fashion_test) -> None:
    provenance = json.loads((directory / "provenance.json").read_text())
    assert "first 64 images of the fashion-mnist test split" in provenance["held_out_eps_mse_note"]
    model, _ = load_model(directory)
    with torch.no_grad():
        again = held_out_eps_mse(model, fashion_test.images[:64])
    assert list(again) == list(provenance["held_out_eps_mse"]) == ["250", "500", "750", "900", "999"]
    for t, value in provenance["held_out_eps_mse"].items():
        # float32 sums differ a little across CPUs and kernels, and a LIF threshold turns that into a spike or not
        assert again[t] == pytest.approx(value, rel=1e-3), t


def test_shipped_records_name_no_machine() -> None:
    """Every JSON shipped beside the checkpoints names files by paths in the checkout (or the Debian dataset's)."""
    root = Path(__file__).resolve().parents[2] / "checkpoints"
    for path in root.rglob("*.json"):
        text = path.read_text()
        for machine in ("/work/", "/home/", "/root/", "/tmp/"):
            assert machine not in text, (path, machine)
