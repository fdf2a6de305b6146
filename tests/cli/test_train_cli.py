"""``sdit train`` and ``sdit sample CHECKPOINT`` through Typer's CliRunner."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

from cli.main import app
from sdit import checkpoint
from sdit.sharding import draw_set
from sdit.training.run_files import iter_metrics
from sdit.workload import Workload
from tests.sdit.test_train import write_idx_dataset

runner = CliRunner()
TINY = ["--preset", "dit-tiny", "--batch-size", "8", "--lr", "1e-3", "--warmup-steps", "0",
        "--log-every", "2", "--sample-every", "0", "--ckpt-every", "2", "--no-progress"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, fashion_test) -> Path:
    """32 real Fashion-MNIST images in the standard (gzipped IDX) train files."""
    return write_idx_dataset(tmp_path_factory.mktemp("fmnist"), fashion_test.images[:32])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A finished 4-step dit-tiny run."""
    out = tmp_path_factory.mktemp("runs") / "run"
    result = runner.invoke(app, ["train", *TINY, "--data-dir", str(data_dir), "--steps", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "trained dit-tiny to step 4" in result.stdout
    return out


def _one_error_line(result, code: int) -> str:  # noqa: ANN001
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_train_writes_a_run(run_dir: Path) -> None:
    assert {p.name for p in run_dir.iterdir()} == {"run.json", "metrics.jsonl", "summary.json", "samples",
                                                   "checkpoints", ".sdit-run", ".sdit-run.lock"}
    assert [r["step"] for r in iter_metrics(run_dir)] == [2, 4]
    assert [p.name for p in checkpoint.list_checkpoints(run_dir)] == ["step-00000002.safetensors",
                                                                        "step-00000004.safetensors"]
    assert (run_dir / "samples" / "step-00000004.png").is_file()  # the final grid
    model, meta = checkpoint.load_model(run_dir)
    assert (meta.preset, meta.step, meta.dataset, meta.seed) == ("dit-tiny", 4, "fashion-mnist", 0)


def test_existing_run_dir_is_not_overwritten_unless_asked(run_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    before = (run_dir / "checkpoints" / "latest").read_bytes()
    args = ["train", *TINY, "--data-dir", str(data_dir), "--steps", "2", "--out", str(run_dir)]
    line = _one_error_line(runner.invoke(app, args), 2)
    assert "exists and is not empty; pass --overwrite or --resume" in line
    assert (run_dir / "checkpoints" / "latest").read_bytes() == before
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "old.txt").write_text("keep me")
    (copy / "checkpoints" / "notes.txt").write_text("mine")
    args = ["train", *TINY, "--data-dir", str(data_dir), "--steps", "2", "--out", str(copy), "--overwrite"]
    assert runner.invoke(app, args).exit_code == 0
    assert [r["step"] for r in iter_metrics(copy)] == [2]
    assert (copy / "old.txt").read_text() == "keep me"  # only the run's own files are replaced
    assert (copy / "checkpoints" / "notes.txt").read_text() == "mine"
    assert [p.name for p in checkpoint.list_checkpoints(copy)] == ["step-00000002.safetensors"]


def test_resume_continues_and_refuses_a_different_preset(run_dir: Path, tmp_path: Path) -> None:
    resumed = tmp_path / "resumed"
    shutil.copytree(run_dir, resumed)
    line = _one_error_line(runner.invoke(app, ["train", "--resume", str(resumed), "--preset", "sdit-tiny",
                                               "--steps", "6"]), 2)
    assert "cannot resume with a different preset='sdit-tiny' (run has 'dit-tiny')" in line
    result = runner.invoke(app, ["train", "--resume", str(resumed), "--steps", "6", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert checkpoint.load_model(resumed)[1].step == 6
    assert [r["step"] for r in iter_metrics(resumed)] == [2, 4, 6]


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--preset", "sdit-huge", "--steps", "2"], 2, "unknown preset 'sdit-huge'"),
        (["--preset", "dit-tiny", "--dataset", "mnist", "--steps", "2"], 2, "mnist: no --data-dir given"),
        (["--preset", "dit-tiny", "--data-dir", "/nonexistent/fmnist", "--steps", "2"], 2, "does not exist"),
        (["--preset", "dit-tiny", "--dataset", "svhn", "--steps", "2", "--data-dir", "/tmp"], 2,
         "unknown dataset 'svhn'"),
        (["--preset", "dit-tiny", "--steps", "2", "--epochs", "1"], 2, "not both"),
        (["--preset", "dit-tiny"], 2, "give --steps or --epochs"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], code: int, needle: str) -> None:
    line = _one_error_line(runner.invoke(app, ["train", *args, "--out", str(tmp_path / "r")]), code)
    assert needle in line
    assert not (tmp_path / "r").exists()


def test_resume_of_a_corrupt_checkpoint_is_one_line(run_dir: Path, tmp_path: Path) -> None:
    line = _one_error_line(runner.invoke(app, ["train", "--resume", str(tmp_path / "none"), "--steps", "6"]), 2)
    assert "no training run at" in line
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    weights = checkpoint.resolve_checkpoint(broken)
    weights.write_bytes(weights.read_bytes()[:100])
    line = _one_error_line(runner.invoke(app, ["train", "--resume", str(broken), "--steps", "6"]), 2)
    assert "not a safetensors file or is truncated" in line


def test_epochs_count_whole_passes(data_dir: Path, tmp_path: Path) -> None:
    args = ["train", *TINY, "--data-dir", str(data_dir), "--epochs", "1", "--out", str(tmp_path / "r")]
    assert runner.invoke(app, args).exit_code == 0
    assert checkpoint.load_model(tmp_path / "r")[1].step == 4  # 32 images / batch 8


def test_sample_a_run_dir_to_png_and_tensor(run_dir: Path, tmp_path: Path) -> None:
    out, tensor = tmp_path / "grid.png", tmp_path / "samples.safetensors"
    args = ["sample", str(run_dir), "--out", str(out), "-n", "4", "--sample-steps", "3", "--seed", "5", "--tensor",
            str(tensor)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "dit-tiny at step 4 (EMA weights)" in result.stdout
    assert np.asarray(Image.open(out)).shape == (62, 62)
    samples = load_file(tensor)["samples"]
    model, _ = checkpoint.load_model(run_dir)
    expected, _ = draw_set(model, 4, Workload.ddim(3, eta=1.0, batch_size=4, seed=5))  # eta 1: the default
    assert torch.equal(samples, expected)
    with safe_open(tensor, "pt") as fh:
        assert fh.metadata()["steps"] == "3"
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "pass --overwrite" in again.stderr


def test_sample_with_eta_is_stochastic_ddim_and_bad_eta_is_one_line(run_dir: Path, tmp_path: Path) -> None:
    tensor = tmp_path / "s.safetensors"
    args = ["sample", str(run_dir), "--out", str(tmp_path / "g.png"), "-n", "2", "--sample-steps", "3", "--eta", "1",
            "--seed", "7", "--tensor", str(tensor)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "(ddim, 3 steps, eta 1, seed 7)" in result.stdout
    model, _ = checkpoint.load_model(run_dir)
    expected, _ = draw_set(model, 2, Workload.ddim(3, eta=1.0, batch_size=2, seed=7))
    assert torch.equal(load_file(tensor)["samples"], expected)
    with safe_open(tensor, "pt") as fh:
        assert fh.metadata()["eta"] == "1"
    for bad in (["--eta", "1.5"], ["--eta", "nan"], ["--method", "ddpm", "--eta", "1"]):
        line = _one_error_line(runner.invoke(app, ["sample", str(run_dir), "--out", str(tmp_path / "h.png"), *bad]), 2)
        assert "--eta" in line
    assert not (tmp_path / "h.png").exists()


def test_sample_compiled_matches_eager(run_dir: Path, tmp_path: Path) -> None:
    tensors = {}
    for mode in ("eager", "compiled"):
        tensors[mode] = tmp_path / f"{mode}.safetensors"
        args = ["sample", str(run_dir), "--out", str(tmp_path / f"{mode}.png"), "-n", "4", "--sample-steps", "3",
                "--tensor", str(tensors[mode])] + (["--compile"] if mode == "compiled" else [])
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    eager, compiled = (load_file(tensors[m])["samples"] for m in ("eager", "compiled"))
    assert torch.allclose(compiled, eager, atol=1e-4)


def test_sample_a_missing_or_corrupt_checkpoint_is_one_line(run_dir: Path, tmp_path: Path) -> None:
    line = _one_error_line(runner.invoke(app, ["sample", str(tmp_path / "nope.safetensors"), "--out",
                                               str(tmp_path / "g.png")]), 2)
    assert "no checkpoint file or run directory" in line
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    line = _one_error_line(runner.invoke(app, ["sample", str(bad), "--out", str(tmp_path / "g.png")]), 2)
    assert "bad.safetensors" in line
    line = _one_error_line(runner.invoke(app, ["sample", "dit-huge", "--out", str(tmp_path / "g.png")]), 2)
    assert "unknown preset 'dit-huge'" in line
    assert not (tmp_path / "g.png").exists()


def test_train_progress_follows_the_rule_of_every_command(tmp_path: Path, data_dir: Path) -> None:
    base = ["train", *(a for a in TINY if a != "--no-progress"), "--data-dir", str(data_dir), "--steps", "2"]
    shown = runner.invoke(app, [*base, "--out", str(tmp_path / "a")], env={"SDIT_PROGRESS": "1"})
    quiet = runner.invoke(app, [*base, "--quiet", "--out", str(tmp_path / "b")], env={"SDIT_PROGRESS": "1"})
    plain = runner.invoke(app, [*base, "--out", str(tmp_path / "c")], env={"SDIT_PROGRESS": None})  # no terminal
    for result in (shown, quiet, plain):
        assert result.exit_code == 0, result.output
        assert "trained dit-tiny to step 2" in result.stdout
    assert "2/2" in shown.stderr  # tqdm's bar
    assert "2/2" not in quiet.stderr and "2/2" not in plain.stderr
