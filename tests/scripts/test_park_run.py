"""scripts/park_run.py: a run's resume point parked in the repository and restored, resuming exactly."""

from __future__ import annotations

import contextlib
import io
import json
import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from sdit import checkpoint
from sdit.data import ImageSet
from sdit.training.config import TrainConfig, load_run_config, resume_config
from sdit.training.train import train

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "park_run.py"


def _process(*args: Path | str) -> subprocess.CompletedProcess[str]:
    """The script run as a process, as a user runs it."""
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def _script(*args: Path | str) -> subprocess.CompletedProcess[str]:
    """The script run in this process (its ``__main__`` with ``argv`` set), with the exit status, stdout and
    stderr a process gives: a ``SystemExit`` message goes to stderr with status 1, as Python does. Saves a
    torch import per call; :func:`_process` checks that a real process says the same."""
    out, err, code = io.StringIO(), io.StringIO(), 0
    with (mock.patch.object(sys, "argv", [str(SCRIPT), *map(str, args)]),
          mock.patch.object(sys, "path", list(sys.path)),
          contextlib.redirect_stdout(out), contextlib.redirect_stderr(err)):
        try:
            runpy.run_path(str(SCRIPT), run_name="__main__")
        except SystemExit as stop:
            if isinstance(stop.code, str):
                err.write(stop.code + "\n")
                code = 1
            else:
                code = stop.code or 0
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_a_restored_park_resumes_to_the_straight_runs_weights(tmp_path: Path, fashion_test) -> None:
    data = ImageSet(fashion_test.images[:16], fashion_test.labels[:16])
    config = TrainConfig(preset="sdit-tiny-sd", steps=6, batch_size=4, lr=1e-3, warmup_steps=2, ema_decay=0.9,
                         log_every=1, sample_every=0, ckpt_every=1, keep=3, sample_num=2, sample_steps=2)
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
    assert done.stdout.strip() == f"restored step 5 into {restored}; resume it with: sdit train --resume {restored}"
    resumed = train(resume_config(load_run_config(restored), steps=6), restored, resume=True, data=data,
                    progress=False)
    assert (resumed.start_step, resumed.step) == (5, 6)
    assert resumed.param_sha256 == straight.param_sha256
    assert checkpoint.load_checkpoint(restored).sha256 == checkpoint.load_checkpoint(tmp_path / "straight").sha256


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory, fashion_test) -> tuple[Path, Path]:
    """Two 2-step dit-tiny runs (different markers), checkpoints at steps 1 and 2."""
    data = ImageSet(fashion_test.images[:8], fashion_test.labels[:8])
    config = TrainConfig(preset="dit-tiny", steps=2, batch_size=4, log_every=1, sample_every=0, ckpt_every=1,
                         sample_num=2, sample_steps=2)  # the end-of-run grid is not what is tested: keep it small
    root = tmp_path_factory.mktemp("runs")
    for name in ("a", "b"):
        train(config, root / name, data=data, progress=False)
    return root / "a", root / "b"


@pytest.mark.parametrize("case", ["park over a non-park", "restore over a run", "restore a non-park",
                                  "park a run without a checkpoint", "park over another run's park",
                                  "park an earlier step", "park over a park holding more"])
def test_refuses_in_one_line_and_keeps_every_file(tmp_path: Path, case: str, two_runs: tuple[Path, Path]) -> None:
    run_a, run_b = two_runs
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    before = None
    if case == "park over a non-park":
        done = _process(run_a, other)  # a real process: exit status 1, the one line on its stderr
    elif case == "restore over a run":
        park = tmp_path / "park"
        assert _script(run_a, park).returncode == 0
        done = _script("--restore", park, other)
    elif case == "restore a non-park":
        done = _script("--restore", other, tmp_path / "new")
        assert not (tmp_path / "new").exists()
    elif case == "park a run without a checkpoint":
        (tmp_path / "empty-run").mkdir()
        done = _script(tmp_path / "empty-run", tmp_path / "park")
        assert not (tmp_path / "park").exists()
    else:
        park = tmp_path / "park"
        assert _script(run_a, park).returncode == 0
        if case == "park an earlier step":
            early = tmp_path / "early"
            shutil.copytree(run_a, early)
            (early / "checkpoints" / "latest").write_text("step-00000001\n")
            source = early
        elif case == "park over another run's park":
            source = run_b
        else:
            (park / "samples").mkdir()
            source = run_a
        before = {p: p.read_bytes() for p in park.rglob("*") if p.is_file()}
        done = _script(source, park)
        if case != "park over a park holding more":
            assert _script(source, tmp_path / "park", "--replace").returncode == 0  # said, and possible
            before = None
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("park_run.py: "), done.stderr
    assert (other / "precious.txt").read_text() == "keep me" and [p.name for p in other.iterdir()] == ["precious.txt"]
    if before is not None:
        assert {p: p.read_bytes() for p in (tmp_path / "park").rglob("*") if p.is_file()} == before
