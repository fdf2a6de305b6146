"""Checkpoints: round trip, pruning, typed errors, refusal of pickled code, interrupted writes."""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sdit import artifacts, checkpoint
from sdit.checkpoint import CheckpointError, CheckpointMeta
from sdit.config import get_preset
from sdit.models import build_model

REPO = Path(__file__).resolve().parents[2]


def _meta(step: int, preset: str = "dit-tiny") -> CheckpointMeta:
    return CheckpointMeta(preset=preset, config=get_preset(preset), step=step, dataset="fashion-mnist",
                          seed=3, git_revision="abc123")


def _save(run_dir: Path, step: int, keep: int = 3, preset: str = "dit-tiny") -> tuple[Path, dict, dict]:
    torch.manual_seed(step)
    model, ema = build_model(preset), build_model(preset)
    state = {"optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}, "marker": torch.arange(step + 1)}
    path = checkpoint.save_checkpoint(run_dir, _meta(step, preset), model.state_dict(), ema.state_dict(),
                                      state, keep=keep)
    return path, model.state_dict(), ema.state_dict()


def test_round_trip_loads_ema_weights_and_metadata(tmp_path: Path) -> None:
    path, raw, ema = _save(tmp_path, 7)
    assert path == tmp_path / "checkpoints" / "step-00000007.safetensors"
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step-00000007"
    for target in (path, tmp_path, tmp_path / "checkpoints"):
        model, meta = checkpoint.load_model(target)
        assert meta == _meta(7)
        assert not model.training
        for name, tensor in model.state_dict().items():
            assert torch.equal(tensor, ema[name]), name
    ckpt = checkpoint.load_checkpoint(path)
    assert all(torch.equal(ckpt.model_state[k], v) for k, v in raw.items())
    state = checkpoint.load_training_state(checkpoint.training_state_path(path), expected_sha256=ckpt.sha256)
    assert state["step"] == 7 and torch.equal(state["marker"], torch.arange(8))
    assert json.loads((tmp_path / "checkpoints" / "step-00000007.json").read_text()) == _meta(7).to_dict()


def test_keeps_the_last_k_and_drops_leftovers_above_latest(tmp_path: Path) -> None:
    for step in (1, 2, 9):
        _save(tmp_path, step, keep=2)
    # A save killed after its weights file: step 9 stays on disk without the rest.
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step-00000002.safetensors",
                                                                         "step-00000009.safetensors"]
    (tmp_path / "checkpoints" / "step-00000009.train.pt").unlink()
    (tmp_path / "checkpoints" / ".step-00000010.safetensors.abc.tmp").write_bytes(b"half")
    _save(tmp_path, 3, keep=2)  # a resumed run saving below the leftover
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["latest", "step-00000002.json", "step-00000002.safetensors", "step-00000002.train.pt",
                     "step-00000003.json", "step-00000003.safetensors", "step-00000003.train.pt"]


def test_rng_state_round_trip() -> None:
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    state = checkpoint.capture_rng_state()
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    checkpoint.restore_rng_state(state)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert [random.random() for _ in range(3)] == expected[2]


def test_a_shipped_directory_resolves_to_its_model_file(tmp_path: Path) -> None:
    path, _, ema = _save(tmp_path / "run", 5)
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "model.safetensors").write_bytes(path.read_bytes())
    assert checkpoint.resolve_checkpoint(shipped) == shipped / "model.safetensors"
    model, meta = checkpoint.load_model(shipped)
    assert meta.step == 5 and all(torch.equal(t, ema[k]) for k, t in model.state_dict().items())
    # A run directory's own pointer wins over a stray model.safetensors beside it.
    (tmp_path / "run" / "model.safetensors").write_bytes(b"not read")
    assert checkpoint.resolve_checkpoint(tmp_path / "run") == path


def test_a_first_checkpoint_without_its_latest_pointer_is_found(tmp_path: Path) -> None:
    """A run killed after its first checkpoint's three files but before ``latest``: resume finds it."""
    path, _, ema = _save(tmp_path, 1)
    (tmp_path / "checkpoints" / "latest").unlink()
    (tmp_path / "checkpoints" / "step-00000002.safetensors").write_bytes(b"incomplete: no .json, no .train.pt")
    for target in (tmp_path, tmp_path / "checkpoints"):
        assert checkpoint.resolve_checkpoint(target) == path
    model, meta = checkpoint.load_model(tmp_path)
    assert meta.step == 1 and all(torch.equal(t, ema[k]) for k, t in model.state_dict().items())
    (tmp_path / "checkpoints" / "step-00000001.train.pt").unlink()  # no complete checkpoint left
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        checkpoint.resolve_checkpoint(tmp_path)


def test_missing_and_corrupt_checkpoints_raise_one_line_errors(tmp_path: Path) -> None:
    cases = {}
    with pytest.raises(CheckpointError) as err:
        checkpoint.load_model(tmp_path / "nope.safetensors")
    cases["missing"] = str(err.value)
    with pytest.raises(CheckpointError) as err:
        checkpoint.load_model(tmp_path)
    cases["empty dir"] = str(err.value)
    path, _, _ = _save(tmp_path / "run", 4)
    blob = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(blob[: len(blob) // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(os.urandom(256))
    for name, target in (("truncated", truncated), ("garbage", garbage)):
        with pytest.raises(CheckpointError) as err:
            checkpoint.load_model(target)
        cases[name] = str(err.value)
    (tmp_path / "run" / "checkpoints" / "latest").write_text("step-00000099\n")
    with pytest.raises(CheckpointError) as err:
        checkpoint.load_model(tmp_path / "run")
    cases["dangling latest"] = str(err.value)
    assert "no checkpoint file or run directory" in cases["missing"]
    assert "step-00000099.safetensors, which is missing" in cases["dangling latest"]
    for name, message in cases.items():
        assert "\n" not in message and len(message) < 400, (name, message)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path: Path) -> None:
    model = build_model("dit-tiny")
    wrong = CheckpointMeta(preset="sdit-tiny", config=get_preset("sdit-tiny"), step=1, dataset="x", seed=0)
    path = checkpoint.save_checkpoint(tmp_path, wrong, model.state_dict(), model.state_dict(), {})
    with pytest.raises(CheckpointError, match="do not fit the model config") as err:
        checkpoint.load_model(path)
    assert "\n" not in str(err.value)


class _RunsCode:
    """Unpickling this calls ``open(marker, "w")``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # noqa: ANN204
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("form", ["torch.save", "raw pickle"])
def test_pickled_code_is_refused_and_never_runs(tmp_path: Path, form: str) -> None:
    marker = tmp_path / "pwned"
    payload = {"format": checkpoint.FORMAT, "step": 1, "optimizer": _RunsCode(marker)}
    # Sanity: the payload really runs code under an unrestricted load.
    pickle.loads(pickle.dumps(payload))
    assert marker.exists()
    marker.unlink()

    path, _, _ = _save(tmp_path / "run", 1)
    state_path = checkpoint.training_state_path(path)
    if form == "torch.save":
        torch.save(payload, state_path)
    else:
        state_path.write_bytes(pickle.dumps(payload))
    with pytest.raises(CheckpointError, match="refusing .*could run code") as err:
        checkpoint.load_training_state(state_path)
    assert "\n" not in str(err.value)
    evil_weights = tmp_path / "evil.safetensors"
    evil_weights.write_bytes(state_path.read_bytes())
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        checkpoint.load_model(evil_weights)
    assert not marker.exists()


@pytest.mark.parametrize("failing_write", [0, 1, 2, 3])
def test_a_failed_rename_leaves_the_previous_checkpoint_loadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_write: int
) -> None:
    """os.replace raising on the weights, metadata, state or pointer write of step 2."""
    _save(tmp_path, 1)
    real_replace, calls = os.replace, []

    def flaky_replace(src, dst):  # noqa: ANN001, ANN202
        calls.append(dst)
        if len(calls) - 1 == failing_write:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(artifacts.os, "replace", flaky_replace)
    with pytest.raises(OSError, match="No space"):
        _save(tmp_path, 2)
    monkeypatch.undo()
    model, meta = checkpoint.load_model(tmp_path)
    assert meta.step == 1
    ckpt = checkpoint.load_checkpoint(tmp_path)
    state = checkpoint.load_training_state(checkpoint.training_state_path(ckpt.path), expected_sha256=ckpt.sha256)
    assert state["step"] == 1
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))


_KILLED_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from tests.sdit.test_checkpoint import _save
    from sdit import artifacts

    run_dir, signal_file, stall_at = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    real_fsync, calls = os.fsync, []

    def stalling_fsync(fd):
        calls.append(fd)
        if len(calls) == stall_at:  # mid-write: the temporary file is written, not yet renamed
            signal_file.write_text("stalled")
            time.sleep(120)
        real_fsync(fd)

    artifacts.os.fsync = stalling_fsync
    _save(run_dir, 2)
    """
)


@pytest.mark.parametrize("stall_at", [1, 5])  # fsync 1: weights temp file; 5: the state temp file
def test_sigkill_mid_write_leaves_the_previous_checkpoint_loadable(tmp_path: Path, stall_at: int) -> None:
    run_dir = tmp_path / "run"
    _save(run_dir, 1)
    script = tmp_path / "writer.py"
    script.write_text(_KILLED_WRITER.format(repo=str(REPO)))
    signal_file = tmp_path / "stalled"
    child = subprocess.Popen([sys.executable, str(script), str(run_dir), str(signal_file), str(stall_at)],
                             cwd=REPO, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not signal_file.exists():
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the writer never reached the write"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    leftovers = list((run_dir / "checkpoints").glob(".*.tmp"))
    assert leftovers, "the kill should have left a temporary file behind"
    model, meta = checkpoint.load_model(run_dir)
    assert meta.step == 1
    ckpt = checkpoint.load_checkpoint(run_dir)
    checkpoint.load_training_state(checkpoint.training_state_path(ckpt.path), expected_sha256=ckpt.sha256)
    _save(run_dir, 2)  # the next save cleans up and completes
    assert checkpoint.load_model(run_dir)[1].step == 2
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))
