"""scripts/park_run.py: a run's resume point parked in the repository and restored, resuming exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sdit import checkpoint
from sdit.data import ImageSet
from sdit.train import TrainConfig, load_run_config, resume_config, train

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "park_run.py"


def _script(*args: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_a_restored_park_resumes_to_the_straight_runs_weights(tmp_path: Path, fashion_test) -> None:
    data = ImageSet(fashion_test.images[:16], fashion_test.labels[:16])
    config = TrainConfig(preset="sdit-tiny-sd", steps=6, batch_size=4, lr=1e-3, warmup_steps=2, ema_decay=0.9,
                         log_every=1, sample_every=0, ckpt_every=1, keep=3)
    straight = train(config, tmp_path / "straight", data=data, progress=False)
    train(resume_config(config, steps=4), tmp_path / "run", data=data, progress=False)

    park = tmp_path / "parked"
    done = _script(tmp_path / "run", park)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (park / "checkpoints").iterdir()) == [
        "latest", "step-00000004.json", "step-00000004.safetensors", "step-00000004.train.pt"]  # one checkpoint
    assert sorted(p.name for p in park.iterdir()) == [".sdit-run", "PARKED.json", "checkpoints", "metrics.jsonl",
                                                      "run.json"]  # no lock, no samples
    assert json.loads((park / "PARKED.json").read_text())["step"] == 4
    source = checkpoint.resolve_checkpoint(tmp_path / "run")
    assert (park / "checkpoints" / source.name).read_bytes() == source.read_bytes()

    # the run goes on; parking again replaces the park's checkpoint
    train(resume_config(load_run_config(tmp_path / "run"), steps=5), tmp_path / "run", resume=True, data=data,
          progress=False)
    assert _script(tmp_path / "run", park).returncode == 0
    assert sorted(p.name for p in (park / "checkpoints").iterdir())[1:] == [
        "step-00000005.json", "step-00000005.safetensors", "step-00000005.train.pt"]

    restored = tmp_path / "elsewhere" / "run"
    done = _script("--restore", park, restored)
    assert done.returncode == 0, done.stderr
    assert "restored step 5" in done.stdout
    resumed = train(resume_config(load_run_config(restored), steps=6), restored, resume=True, data=data,
                    progress=False)
    assert (resumed.start_step, resumed.step) == (5, 6)
    assert resumed.param_sha256 == straight.param_sha256
    assert checkpoint.load_checkpoint(restored).sha256 == checkpoint.load_checkpoint(tmp_path / "straight").sha256


@pytest.mark.parametrize("case", ["park over a non-park", "restore over a run", "restore a non-park"])
def test_refuses_to_overwrite(tmp_path: Path, case: str) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    if case == "park over a non-park":
        done = _script(tmp_path / "no-run", other)
    elif case == "restore over a run":
        park = tmp_path / "park"
        park.mkdir()
        (park / "PARKED.json").write_text("{}")
        done = _script("--restore", park, other)
    else:
        done = _script("--restore", other, tmp_path / "new")
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("park_run.py: ")  # one line
    assert (other / "precious.txt").read_text() == "keep me" and sorted(p.name for p in other.iterdir()) == [
        "precious.txt"]
