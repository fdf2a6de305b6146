"""scripts/ship_checkpoint.py: a run's checkpoint, provenance and grids, copied into place."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cli.main import app
from sdit import checkpoint
from sdit.artifacts import image_grid
from sdit.diffusion import sample
from sdit.workload import Workload
from tests.sdit.test_train import write_idx_dataset

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "ship_checkpoint.py"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, fashion_test) -> Path:
    """A 4-step dit-tiny run on 32 real images in training IDX files, with 16 more as its test split."""
    data = write_idx_dataset(tmp_path_factory.mktemp("fmnist"), fashion_test.images[:32])
    held_out = write_idx_dataset(tmp_path_factory.mktemp("held-out"), fashion_test.images[32:48])
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        (held_out / f"train-{kind}.gz").rename(data / f"t10k-{kind}.gz")
    out = tmp_path_factory.mktemp("runs") / "run"
    args = ["train", "--preset", "dit-tiny", "--batch-size", "8", "--steps", "4", "--log-every", "2",
            "--sample-every", "0", "--ckpt-every", "2", "--no-progress", "--data-dir", str(data), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def _ship(run_dir: Path, dest: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, str(SCRIPT), str(run_dir), str(dest), "--environment", "test", "--num", "4", *extra]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ship_with_stochastic_ddim(run_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "shipped"
    done = _ship(run_dir, dest, "--steps", "3", "--eta", "1", "--seed", "2", "--stopped", "by hand")
    assert done.returncode == 0, done.stderr
    latest = checkpoint.load_checkpoint(run_dir)
    assert (dest / "model.safetensors").read_bytes() == latest.path.read_bytes()
    provenance = json.loads((dest / "provenance.json").read_text())
    assert provenance["steps"] == 4 and provenance["images_seen"] == 32 and provenance["epochs_seen"] == 1.0
    assert provenance["stopped"] == "by hand"
    assert provenance["firing_rate_workload"] == {"kind": "ddim", "timestep": None, "steps": 50, "eta": 0.0,
                                                  "batch_size": 8, "seed": 2}
    assert provenance["command"].startswith("sdit train --preset dit-tiny --dataset fashion-mnist --batch-size 8")
    assert provenance["samples"] == ("samples.png: DDIM 3 steps, eta 1, seed 2, EMA weights; "
                                     "samples-ddim50-eta0.png: DDIM 50 steps, eta 0, seed 2, EMA weights")
    data_dir = provenance["run_json"]["train"]["data_dir"]
    assert f"first 16 images of the fashion-mnist test split ({data_dir})" in provenance["held_out_eps_mse_note"]
    # Held out: the run's own test split, all five timesteps, a barely trained model near the zero predictor.
    assert list(provenance["held_out_eps_mse"]) == ["250", "500", "750", "900", "999"]
    assert all(0.1 < v < 10 for v in provenance["held_out_eps_mse"].values())
    model, _ = checkpoint.load_model(latest.path)
    torch.manual_seed(2)
    expected = sample(model, Workload.ddim(3, eta=1.0, batch_size=4, seed=2))
    assert np.array_equal(np.asarray(Image.open(dest / "samples.png")), image_grid(expected)[..., 0])
    assert (dest / "samples-ddim50-eta0.png").is_file()
    # Never overwrites what it wrote unless asked.
    again = _ship(run_dir, dest, "--steps", "3", "--eta", "1")
    assert again.returncode == 2 and "pass --overwrite" in again.stderr.strip().splitlines()[-1]
    assert (dest / "model.safetensors").read_bytes() == latest.path.read_bytes()
    # Re-shipped with the default sampler: the second grid of the earlier shipment goes.
    assert _ship(run_dir, dest, "--overwrite").returncode == 0
    assert sorted(p.name for p in dest.iterdir()) == ["model.safetensors", "provenance.json", "samples.png"]


def test_default_sampler_writes_one_grid_and_bad_eta_is_refused(run_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "plain"
    assert _ship(run_dir, dest).returncode == 0
    assert sorted(p.name for p in dest.iterdir()) == ["model.safetensors", "provenance.json", "samples.png"]
    for flags, message in ((["--eta", "2"], "eta must be in [0, 1]"), (["--steps", "0"], "--steps must be in")):
        bad = _ship(run_dir, tmp_path / "bad", *flags)
        assert bad.returncode == 2 and message in bad.stderr
    assert not (tmp_path / "bad").exists()
