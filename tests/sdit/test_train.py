"""Training: exact resume, firing-rate metering, schedules, and DDP under torchrun (2 CPU processes)."""

from __future__ import annotations

import copy
import gzip
import json
import os
import struct
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import neuron, surrogate
from torch import nn

from sdit import checkpoint, rundir
from sdit.data import ImageSet
from sdit.ema import EMA
from sdit.training.config import TrainConfig, TrainError, load_run_config, resume_config
from sdit.training.firing_rate import FiringRateMeter, rates_from_totals
from sdit.training.run_files import iter_metrics
from sdit.training.schedule import epoch_order, lr_at
from sdit.training.state import load_optimizer_state, make_optimizer
from sdit.training.train import train

REPO = Path(__file__).resolve().parents[2]


def write_idx_dataset(directory: Path, images: torch.Tensor) -> Path:
    """Write (B, 1, 28, 28) images in [-1, 1] as gzipped Fashion-MNIST-format train IDX files."""
    directory.mkdir(parents=True, exist_ok=True)
    pixels = ((images[:, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()  # (B, 28, 28)
    labels = np.zeros(len(pixels), dtype=np.uint8)
    for name, array in (("train-images-idx3-ubyte", pixels), ("train-labels-idx1-ubyte", labels)):
        header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
        (directory / (name + ".gz")).write_bytes(gzip.compress(header + array.tobytes()))
    return directory


def _final_state(run_dir: Path) -> tuple[checkpoint.Checkpoint, dict]:
    ckpt = checkpoint.load_checkpoint(run_dir)
    state = checkpoint.load_training_state(checkpoint.training_state_path(ckpt.path), expected_sha256=ckpt.sha256)
    return ckpt, state


def _assert_same(a: object, b: object, where: str) -> None:
    """Exact equality of nested dicts / lists of tensors and plain values."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("preset", ["sdit-tiny", "dit-tiny", "sdit-tiny-sd"])
def test_n_steps_then_resume_n_equals_2n_straight(tmp_path: Path, preset: str, fashion_test) -> None:
    # 20 images in batches of 4: 5 batches per epoch, so the 6 steps cross an epoch boundary;
    # the warm-up (4 steps) spans the resume point; samples and checkpoints happen on the way.
    data = ImageSet(fashion_test.images[:20], fashion_test.labels[:20])
    config = TrainConfig(preset=preset, steps=6, batch_size=4, lr=1e-3, warmup_steps=4, ema_decay=0.9,
                         log_every=2, sample_every=2, ckpt_every=2, keep=2, sample_num=2, sample_steps=2)
    straight = train(config, tmp_path / "straight", data=data, progress=False)

    first = train(resume_config(config, steps=3), tmp_path / "resumed", data=data, progress=False)
    assert first.step == 3
    saved = load_run_config(tmp_path / "resumed")
    second = train(resume_config(saved, steps=6), tmp_path / "resumed", resume=True, data=data, progress=False)
    assert (second.start_step, second.step) == (3, 6)

    a, a_state = _final_state(tmp_path / "straight")
    b, b_state = _final_state(tmp_path / "resumed")
    assert a.meta == b.meta and a.meta.step == 6
    _assert_same(a.model_state, b.model_state, "model")
    _assert_same(a.ema_state, b.ema_state, "ema")
    for key in ("optimizer", "ema", "data"):
        _assert_same(a_state[key], b_state[key], key)
    assert a.sha256 == b.sha256  # the weights files are byte-identical
    assert straight.param_sha256 == second.param_sha256
    assert straight.final_loss == second.final_loss  # the 5-6 window in both
    steps = [r["step"] for r in iter_metrics(tmp_path / "resumed")]
    assert steps == [2, 3, 4, 6]  # the resumed run logs after the checkpoint, no duplicates
    assert sorted(p.name for p in (tmp_path / "resumed" / "samples").iterdir()) == [
        "step-00000002.png", "step-00000003.png", "step-00000004.png", "step-00000006.png"]
    if preset == "sdit-tiny":
        record = next(iter_metrics(tmp_path / "straight"))
        assert set(record["firing_rate"]) == {f"{b}_blocks.0.{n}_lif" for b in ("in", "mid", "out")
                                              for n in ("attn", "ffn")}


@pytest.mark.parametrize("preset", ["sdit-tiny", "sdit-tiny-sd"])
def test_compiled_training_matches_eager(tmp_path: Path, preset: str, fashion_test) -> None:
    # torch.compile fuses element-wise ops, so the last bits may differ; the run, its
    # firing-rate hooks and its metrics must not (sdit-tiny-sd: the mix form of Eq. SD-3 compiled).
    data = ImageSet(fashion_test.images[:8], fashion_test.labels[:8])
    config = TrainConfig(preset=preset, steps=2, batch_size=4, lr=1e-3, warmup_steps=0, log_every=1,
                         sample_every=0, ckpt_every=0, sample_num=2, sample_steps=2)
    eager = train(config, tmp_path / "eager", data=data, progress=False)
    compiled = train(replace(config, compile=True), tmp_path / "compiled", data=data, progress=False)
    a, b = list(iter_metrics(tmp_path / "eager")), list(iter_metrics(tmp_path / "compiled"))
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2]
    for ra, rb in zip(a, b, strict=True):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-4)
        assert rb["firing_rate"].keys() == ra["firing_rate"].keys()
    assert compiled.final_loss == pytest.approx(eager.final_loss, rel=1e-4)
    assert load_run_config(tmp_path / "compiled").compile is True
    # compile is a way of running, not part of the recipe: a resume may switch it
    assert resume_config(load_run_config(tmp_path / "eager"), compile=True, steps=4).compile is True


def test_firing_rate_meter_counts_the_same_through_torch_compile() -> None:
    from sdit.models import build_model

    torch.manual_seed(0)
    model = build_model("sdit-tiny")
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)  # an untrained SDiT barely fires; scaled weights make every LIF layer spike
    meter = FiringRateMeter(model)
    x, t = torch.randn(4, 1, 28, 28), torch.randint(0, 1000, (4,))
    eager_out = model(x, t)
    eager = meter.totals(torch.device("cpu"))  # (2, K)
    meter.reset()
    net = torch.compile(model)
    compiled_out = net(x, t)
    compiled = meter.totals(torch.device("cpu"))
    assert torch.allclose(compiled_out, eager_out, atol=1e-4)
    assert (eager[0] > 0).all()  # every layer fired
    assert torch.equal(compiled, eager)  # the same spikes, counted once each
    # Counting must not make the compiled graph depend on a Python counter: later steps,
    # and a reset between them, reuse the first compilation.
    with torch._dynamo.config.patch(error_on_recompile=True):
        net(x, t)
        assert torch.equal(meter.totals(torch.device("cpu")), 2 * eager)
        meter.reset()
        net(x, t)
    assert torch.equal(meter.totals(torch.device("cpu")), eager)


def test_resume_refuses_a_changed_recipe(tmp_path: Path, fashion_test) -> None:
    config = TrainConfig(preset="dit-tiny", steps=2, batch_size=4, log_every=1, sample_every=0, ckpt_every=0)
    with pytest.raises(TrainError, match="different lr=0.01 .*run has 0.0001"):
        resume_config(config, lr=0.01, steps=4)
    with pytest.raises(TrainError, match="no training run to resume"):
        train(config, tmp_path / "none", resume=True, data=fashion_test, progress=False)
    train(config, tmp_path / "run", data=ImageSet(fashion_test.images[:8], fashion_test.labels[:8]),
          progress=False)
    with pytest.raises(TrainError, match="exists and is not empty"):
        train(config, tmp_path / "run", data=fashion_test, progress=False)
    with pytest.raises(TrainError, match="the data changed"):
        train(resume_config(config, steps=4), tmp_path / "run", resume=True,
              data=ImageSet(fashion_test.images[:12], fashion_test.labels[:12]), progress=False)


def test_lr_warmup_and_epoch_order() -> None:
    config = TrainConfig(preset="dit-tiny", steps=10, lr=1e-3, warmup_steps=4)
    assert [lr_at(config, s) for s in range(6)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    order = epoch_order(10, seed=0, epoch=0)
    assert sorted(order.tolist()) == list(range(10))
    assert torch.equal(order, epoch_order(10, seed=0, epoch=0))
    assert not torch.equal(order, epoch_order(10, seed=0, epoch=1))
    assert not torch.equal(order, epoch_order(10, seed=1, epoch=0))


def test_ema_warmup_decay_and_update() -> None:
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    ema = EMA(model, decay=0.5)
    assert ema.current_decay() == pytest.approx(0.1)  # min(0.5, 1 / 10)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    assert ema.model.weight.item() == pytest.approx(0.9)  # 0.1 * 0 + 0.9 * 1
    ema.num_updates = 100
    ema.update(model)
    assert ema.model.weight.item() == pytest.approx(0.95)  # decay 0.5 now


def test_firing_rate_is_spikes_per_neuron_per_time_step() -> None:
    lif = neuron.LIFNode(tau=2.0, v_threshold=1.0, v_reset=0.0, surrogate_function=surrogate.ATan(), step_mode="m")
    net = nn.Sequential(lif)
    meter = FiringRateMeter(net)
    # Constant input 1.5 over T = 4: v = 0.75, 1.125 (spike, reset), 0.75, 1.125 (spike) -> 0.5.
    # Constant input 0.5 never reaches the threshold -> 0.
    x = torch.tensor([1.5, 0.5]).expand(4, 3, 2)  # (T, B, neurons)
    net(x)
    lif.reset()
    per_layer, mean = rates_from_totals(meter.names, meter.totals(torch.device("cpu")))
    assert per_layer == {"0": 0.25} and mean == 0.25
    meter.reset()
    assert rates_from_totals(meter.names, meter.totals(torch.device("cpu")))[1] is None
    meter.remove()
    assert rates_from_totals([], FiringRateMeter(nn.Linear(1, 1)).totals(torch.device("cpu"))) == ({}, None)


def test_torchrun_two_cpu_processes_stay_in_sync(tmp_path: Path, fashion_test) -> None:
    """2 ranks under DDP (gloo): identical parameters, one run directory, falling loss,
    and the same weights as one process training the same global batches."""
    data = ImageSet(fashion_test.images[:64], fashion_test.labels[:64])
    data_dir = write_idx_dataset(tmp_path / "data", data.images)
    runs, cwd = tmp_path / "runs", tmp_path / "cwd"
    cwd.mkdir()
    options = ["--preset", "sdit-tiny", "--dataset", "fashion-mnist", "--data-dir", str(data_dir),
               "--batch-size", "8", "--steps", "20", "--lr", "2e-3", "--warmup-steps", "0",
               "--log-every", "5", "--sample-every", "0", "--ckpt-every", "10", "--no-progress"]
    sdit_script = Path(sys.executable).with_name("sdit")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(sdit_script), "train", *options, "--out", str(runs / "ddp")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained sdit-tiny to step 20") == 1  # rank 0 reports, rank 1 is silent

    assert [p.name for p in runs.iterdir()] == ["ddp"] and not any(cwd.iterdir())
    summary = json.loads((runs / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2
    hashes = summary["param_sha256"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]
    losses = [r["loss"] for r in iter_metrics(runs / "ddp")]
    assert len(losses) == 4 and losses[-1] < 0.9 * losses[0], losses
    ckpt = checkpoint.load_checkpoint(runs / "ddp")
    assert ckpt.meta.step == 20

    config = TrainConfig(preset="sdit-tiny", data_dir=str(data_dir), batch_size=8, steps=20, lr=2e-3,
                         warmup_steps=0, log_every=5, sample_every=0, ckpt_every=10)
    train(config, runs.with_name("single"), progress=False)  # float sums differ: close, not equal
    reference = checkpoint.load_checkpoint(runs.with_name("single"))
    for name, tensor in reference.model_state.items():
        torch.testing.assert_close(ckpt.model_state[name], tensor, rtol=1e-3, atol=1e-4, msg=name)


def _adamw_steps(opt: torch.optim.Optimizer, params: list[nn.Parameter], grads: list[list[torch.Tensor]]) -> None:
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        opt.step()


def test_make_optimizer_is_the_recipes_adamw_fused_and_resumes_any_saved_state() -> None:
    torch.manual_seed(0)
    shapes = [(8, 5), (5,), (3, 4, 2)]
    start = [torch.randn(s) for s in shapes]
    grads = [[torch.randn(s) for s in shapes] for _ in range(6)]

    def params() -> list[nn.Parameter]:
        return [nn.Parameter(t.clone()) for t in start]

    plain_p, fused_p = params(), params()
    plain = torch.optim.AdamW(plain_p, lr=1e-2, weight_decay=0.1, foreach=False)
    fused = make_optimizer(fused_p, lr=1e-2, weight_decay=0.1)
    assert fused.param_groups[0]["fused"] is True
    assert {k: v for k, v in fused.defaults.items() if k not in ("fused", "foreach")} == {
        k: v for k, v in plain.defaults.items() if k not in ("fused", "foreach")}  # the same recipe
    _adamw_steps(plain, plain_p, grads[:3])
    _adamw_steps(fused, fused_p, grads[:3])
    for a, b in zip(plain_p, fused_p, strict=True):  # the same update, up to float rounding
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)

    # A plain (earlier) run's state resumes fused; a fused state resumes exactly where it left off.
    from_plain_p = [nn.Parameter(p.detach().clone()) for p in plain_p]
    from_plain = make_optimizer(from_plain_p, lr=1e-2, weight_decay=0.1)
    load_optimizer_state(from_plain, copy.deepcopy(plain.state_dict()))  # as from a file: no shared tensors
    assert from_plain.param_groups[0]["fused"] is True and from_plain.param_groups[0]["foreach"] is None
    resumed_p = [nn.Parameter(p.detach().clone()) for p in fused_p]
    resumed = make_optimizer(resumed_p, lr=1e-2, weight_decay=0.1)
    load_optimizer_state(resumed, copy.deepcopy(fused.state_dict()))
    _adamw_steps(plain, plain_p, grads[3:])
    _adamw_steps(from_plain, from_plain_p, grads[3:])
    _adamw_steps(fused, fused_p, grads[3:])
    _adamw_steps(resumed, resumed_p, grads[3:])
    for a, b, c, d in zip(plain_p, from_plain_p, fused_p, resumed_p, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)
        assert torch.equal(d, c)
    assert float(from_plain.state[from_plain_p[0]]["step"]) == 6.0


def test_pooled_rate_carries_the_surrogate_gradient() -> None:
    lif = neuron.LIFNode(tau=2.0, v_threshold=1.0, v_reset=0.0, surrogate_function=surrogate.ATan(), step_mode="m")
    meter = FiringRateMeter(nn.Sequential(lif), differentiable=True)
    x = torch.tensor([1.5, 0.5]).expand(4, 3, 2).clone().requires_grad_(True)  # (T, B, neurons)
    lif(x)
    lif.reset()
    rate = meter.pooled_rate()
    assert rate.item() == 0.25  # the same pooled rate the counts give
    rate.backward()
    assert x.grad is not None and bool((x.grad > 0).all())  # more input, more spikes: the penalty pushes it down
    assert meter.pooled_rate().item() == 0.0  # cleared once read


def test_rate_penalty_lowers_the_firing_rate(tmp_path: Path, fashion_test) -> None:
    """Same seed and data: a large penalty drives the pooled firing rate below the unpenalised run's."""
    data = ImageSet(fashion_test.images[:32], fashion_test.labels[:32])
    rates = {}
    for penalty in (0.0, 100.0):
        config = TrainConfig(preset="sdit-tiny-sd", steps=6, batch_size=4, lr=2e-2, warmup_steps=0, log_every=2,
                             sample_every=0, ckpt_every=0, sample_num=1, sample_steps=1, rate_penalty=penalty)
        run = tmp_path / f"run-{penalty}"
        train(config, run, data=data, progress=False)
        rates[penalty] = list(iter_metrics(run))[-1]["mean_firing_rate"]
    assert rates[100.0] < 0.6 * rates[0.0], rates
    with pytest.raises(TrainError, match="rate_penalty"):
        resume_config(config, rate_penalty=1.0)
    with pytest.raises(ValueError, match="rate_penalty must be >= 0"):
        TrainConfig(preset="sdit-tiny", steps=1, rate_penalty=-1.0)


def test_a_run_directory_without_marker_is_refused_in_one_line(tmp_path: Path, fashion_test) -> None:
    """A run of an earlier sdit (run.json, no .sdit-run marker) is neither resumed nor overwritten."""
    config = TrainConfig(preset="dit-tiny", steps=2, batch_size=4, log_every=1, sample_every=0, ckpt_every=0)
    data = ImageSet(fashion_test.images[:8], fashion_test.labels[:8])
    run = tmp_path / "run"
    train(config, run, data=data, progress=False)
    (run / rundir.MARKER).unlink()
    line = (f"run directory {run} has no .sdit-run marker (a run of an earlier sdit is neither resumed nor "
            f"overwritten); start a new run in another directory, with --init-from {run} to begin from its weights")
    with pytest.raises(TrainError) as info:
        train(resume_config(config, steps=4), run, resume=True, data=data, progress=False)
    assert str(info.value) == line
    with pytest.raises(TrainError) as info:
        train(config, run, overwrite=True, data=data, progress=False)
    assert str(info.value) == f"--out: {line}"
    assert sorted(p.name for p in run.iterdir()) == [".sdit-run.lock", "checkpoints", "metrics.jsonl", "run.json",
                                                     "samples", "summary.json"]
