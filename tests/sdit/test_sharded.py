"""Sets of images drawn per image and shared among torchrun processes: the same set, bit for bit, resumable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from cli.main import app
from sdit import checkpoint, sharding
from sdit.checkpoint import CheckpointMeta
from sdit.config import get_preset
from sdit.diffusion import sample
from sdit.models import build_model
from sdit.workload import Workload

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FAKE_METER_SDIT = Path(__file__).parent / "sdit_fake_meter.py"  # sdit whose meter is tests/sdit/fake_meter.py's
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory holding one checkpoint of sdit-tiny (seeded weights: every process loads the same)."""
    run_dir = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = build_model("sdit-tiny")
    meta = CheckpointMeta(preset="sdit-tiny", config=get_preset("sdit-tiny"), step=2, dataset="fashion-mnist",
                          seed=0, git_revision="unknown")
    checkpoint.save_checkpoint(run_dir, meta, model.state_dict(), model.state_dict(), {})
    return run_dir


def test_batches_are_shared_round_robin_and_cover_the_set_once() -> None:
    spans = sharding.batches(10, 4)
    assert spans == [range(0, 4), range(4, 8), range(8, 10)]
    ranks = [sharding.rank_batches(spans, r, 2) for r in range(2)]
    assert ranks == [[range(0, 4), range(8, 10)], [range(4, 8)]]
    assert sorted(i for part in ranks for span in part for i in span) == list(range(10))


def test_a_set_is_the_same_noise_at_any_batch_size_and_stochastic_steps_too() -> None:
    torch.manual_seed(0)
    model = build_model("dit-tiny").eval()
    workload = Workload.ddim(2, eta=1.0, batch_size=3, seed=4)
    small, _ = sharding.draw_set(model, 6, workload)
    large, _ = sharding.draw_set(model, 6, Workload.ddim(2, eta=1.0, batch_size=6, seed=4))
    torch.testing.assert_close(small, large, rtol=1e-4, atol=1e-5)  # batched kernels may round differently
    # Image 4 alone: the same image as the fifth of the set.
    alone = sharding.draw_batch(model, workload, range(4, 5))
    torch.testing.assert_close(alone[0], small[4], rtol=1e-4, atol=1e-5)
    again, _ = sharding.draw_set(model, 6, workload)
    assert torch.equal(again, small)
    # A workload run (profiling's) draws the first images of the set.
    assert torch.equal(sample(model, Workload.ddim(2, eta=1.0, batch_size=6, seed=4)), large)


def test_a_shard_directory_of_other_settings_is_refused(tmp_path: Path) -> None:
    store = sharding.ShardStore(tmp_path / "s", {"sampler": {"seed": 0}})
    store.open()
    store.save(range(0, 2), torch.zeros(2, 1, 4, 4))
    assert torch.equal(store.load(range(0, 2)), torch.zeros(2, 1, 4, 4))
    assert store.load(range(2, 4)) is None
    with pytest.raises(sharding.ShardError, match=r"another run \(sampler differ: sampler \{'seed': 0\} there"):
        sharding.ShardStore(tmp_path / "s", {"sampler": {"seed": 1}}).open()
    other = sharding.ShardStore(tmp_path / "t", {"sampler": {"seed": 1}})
    other.open()
    (tmp_path / "t" / store.path(range(0, 2)).name).write_bytes(store.path(range(0, 2)).read_bytes())
    with pytest.raises(sharding.ShardError, match="not a shard of this run"):
        other.load(range(0, 2))


def test_torchrun_parses_every_option_of_evaluate_and_sample_as_the_programs() -> None:
    """torchrun's parser reads an abbreviation of its own options anywhere on the line: --num is ambiguous
    (--numa-binding), --num-images and -n are not."""
    from torch.distributed.run import get_args_parser

    parser = get_args_parser()
    for option in ("--num-images", "-n", "--shards", "--batch-size", "--seed", "--json", "--save-samples", "--out"):
        args = parser.parse_args(["--standalone", "--nproc_per_node", "2", "sdit", "evaluate", "X", option, "16"])
        assert args.training_script_args == ["evaluate", "X", option, "16"]
    with pytest.raises(SystemExit):
        parser.parse_args(["--standalone", "--nproc_per_node", "2", "sdit", "evaluate", "X", "--num", "16"])


def _samples(path: Path) -> tuple[torch.Tensor, dict[str, str]]:
    """A samples file's tensor and metadata (safetensors orders the metadata keys differently each process)."""
    with safe_open(str(path), framework="pt") as fh:
        return fh.get_tensor("samples"), fh.metadata()


EVALUATE = ["--sample-steps", "2", "--eta", "1", "--batch-size", "4", "--ref-num", "32", "--kid-subsets", "2",
            "--nearest-k", "3"]


def test_two_torchrun_processes_give_the_single_process_set_and_resume_a_killed_run(
        tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """... and measure: each process its own sampling window (the fake meter of tests/sdit/fake_meter.py, which
    torchrun's processes get through tests/sdit/sdit_fake_meter.py), summed on rank 0 over the images drawn."""
    import profiling.meters
    from tests.sdit.fake_meter import IDLE_W, fake_make_meter, window_reading

    monkeypatch.setattr(profiling.meters, "make_meter", fake_make_meter)
    monkeypatch.delenv("RANK", raising=False)
    env = {**os.environ, "SDIT_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    monkeypatch.setenv("SDIT_CACHE", env["SDIT_CACHE"])
    one, one_samples = tmp_path / "one.json", tmp_path / "one.safetensors"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as torchrun's processes (OMP_NUM_THREADS=1): kernels reduce in thread-count order
    try:
        result = runner.invoke(app, ["evaluate", str(tiny_run), "--num", "16", *EVALUATE, "--json", str(one),
                                     "--save-samples", str(one_samples), "--measure", "--idle-s", "0.5"])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    # One process killed after its first batch: that batch stays in the shard directory.
    shards = tmp_path / "shards"
    saves = []
    real_save = sharding.ShardStore.save

    def save_then_die(self: sharding.ShardStore, span: range, samples: torch.Tensor) -> None:
        real_save(self, span, samples)
        saves.append(span)
        raise KeyboardInterrupt

    monkeypatch.setattr(sharding.ShardStore, "save", save_then_die)
    killed = runner.invoke(app, ["evaluate", str(tiny_run), "--num", "16", *EVALUATE, "--shards", str(shards)])
    assert killed.exit_code != 0 and saves == [range(0, 4)]
    assert sorted(p.name for p in shards.glob("samples-*")) == ["samples-00000-00004.safetensors"]
    # Two processes, the documented command line (sdit with the fake meter), resume it.
    two, two_samples = tmp_path / "two.json", tmp_path / "two.safetensors"
    done = subprocess.run(
        [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(FAKE_METER_SDIT),
         "evaluate", str(tiny_run), "--num-images", "16", *EVALUATE, "--shards", str(shards), "--json", str(two),
         "--save-samples", str(two_samples), "--measure", "--idle-s", "0.5"],
        env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "shards in" in done.stderr and "1 batches reused, 3 drawn" in done.stderr
    (x1, meta1), (x2, meta2) = _samples(one_samples), _samples(two_samples)
    assert x2.numpy().tobytes() == x1.numpy().tobytes() and meta2 == meta1  # the samples, bit for bit
    first, second = json.loads(one.read_text()), json.loads(two.read_text())
    assert second["processes"] == 2 and first["processes"] == 1
    a, b = first["results"]["domain"], second["results"]["domain"]
    assert b["sample_features_sha256"] == a["sample_features_sha256"]  # the features, bit for bit
    for key in ("fid", "kid", "kid_standard_error", "precision", "recall", "density", "coverage"):
        assert b[key] == a[key], key
    assert sorted(p.name for p in shards.glob("samples-*")) == [f"samples-{s:05d}-{s + 4:05d}.safetensors"
                                                              for s in (0, 4, 8, 12)]
    # Measured: rank 0 drew batch [8, 12) (it found [0, 4) in the shards), rank 1 [4, 8) and [12, 16).
    m1, m2 = first["measured"], second["measured"]
    assert m1["available"] and m2["available"] and sorted(m1) == sorted(m2)
    assert [sorted(r) for r in m2["ranks"]] == [sorted(m1["ranks"][0])] * 2  # the single-process structure
    assert [(r["rank"], r["images"]) for r in m2["ranks"]] == [(0, 4), (1, 8)]
    assert (m2["images_sampled"], m2["images_reused"], m2["processes"]) == (12, 4, 2)
    assert [(r["time_s"], r["energy_j"]) for r in m2["ranks"]] == [window_reading(0), window_reading(1)]
    assert m2["energy_j"] == m2["ranks"][0]["energy_j"] + m2["ranks"][1]["energy_j"] == 30.0
    assert m2["energy_j_per_image"] == 30.0 / 12  # the reused images are not counted
    assert m2["energy_above_idle_j_per_image"] == (30.0 - IDLE_W * (2.0 + 4.0)) / 12
    assert (m1["images_sampled"], m1["energy_j"], m1["energy_j_per_image"]) == (16, 10.0, 10.0 / 16)
    assert "measured energy: 2.5 J per image" in done.stdout and "4 images reused from --shards" in done.stdout
