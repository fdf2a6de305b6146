"""Measured workloads over the real NvmlMeter and a fake NVML: minimum window, joules per image."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

from profiling.measure import measure_repeated, measure_train_step, measure_workload
from profiling.meters import MeterError, MeterUnavailable, NullMeter, NvmlMeter
from profiling.workloads import profile_workload
from sdit.diffusion import Diffusion, sample
from sdit.models import build_model
from sdit.workload import Workload
from tests.profiling.fake_nvml import FakeClock, FakeGpu, FakeNvml


@pytest.fixture()
def gpu() -> FakeGpu:
    return FakeGpu(FakeClock(), idle_power_w=50.0)


@pytest.fixture()
def nvml(gpu: FakeGpu) -> FakeNvml:
    return FakeNvml([gpu])


@pytest.fixture()
def meter(nvml: FakeNvml, gpu: FakeGpu) -> NvmlMeter:
    return NvmlMeter(0, nvml=nvml, synchronize=lambda: nvml.record("sync"), clock=gpu.clock, sleep=gpu.idle,
                     trace_interval_s=None)  # the log below lists counter reads alone


def test_workload_repeats_until_the_window_is_long_enough(
    meter: NvmlMeter, nvml: FakeNvml, gpu: FakeGpu
) -> None:
    def work() -> None:
        nvml.record("work")
        gpu.run(0.375, 200.0)

    nvml.log.clear()
    m = measure_repeated(meter, "w", work, min_window_s=1.0, warmup=1)

    # warm-up; a 1-call window times it (0.375 s); ceil(1 / 0.375) = 3 calls fill 1.125 s.
    assert m.repeats == 3
    assert (m.time_s, m.energy_j) == (1.125, 225.0)
    window = ["sync", "energy"]
    assert nvml.log == ["work"] + window + ["work"] + window + window + ["work"] * 3 + window


def test_repeat_count_grows_until_a_window_reaches_the_minimum(meter: NvmlMeter, gpu: FakeGpu) -> None:
    durations: Iterator[float] = iter([2.0, 0.5] + [0.25] * 20)  # slow warm-up, then faster

    def work() -> None:
        gpu.run(next(durations), 100.0)

    m = measure_repeated(meter, "w", work, min_window_s=1.0)
    # windows: 1 call (0.5 s) -> 2 calls (0.5 s) -> max(3, ceil(2 * 1 / 0.5)) = 4 calls (1.0 s)
    assert (m.repeats, m.time_s, m.energy_j) == (4, 1.0, 100.0)


def test_gives_up_after_max_windows(meter: NvmlMeter, gpu: FakeGpu) -> None:
    expected = r"stayed under 1000.0 s in 1 window\(s\); 2000 repeats would be next"
    with pytest.raises(MeterError, match=expected):
        measure_repeated(meter, "w", lambda: gpu.run(0.5, 100.0), min_window_s=1000.0, max_windows=1)


def test_failing_workload_closes_its_window(meter: NvmlMeter, gpu: FakeGpu) -> None:
    calls = []

    def work() -> None:
        calls.append(1)
        if len(calls) == 2:  # fails inside the first window
            raise RuntimeError("boom")
        gpu.run(1.0, 100.0)

    with pytest.raises(RuntimeError, match="boom"):
        measure_repeated(meter, "w", work)
    meter.begin_window("w")  # not left open
    gpu.run(1.0, 100.0)
    assert meter.end_window("w").energy_j == 100.0


class ClockedModel(nn.Module):
    """A real tiny model whose every forward pass costs fake GPU time and energy."""

    def __init__(self, gpu: FakeGpu, forward_s: float, power_w: float) -> None:
        super().__init__()
        self.inner = build_model("sdit-tiny")
        self.config = self.inner.config
        self.gpu, self.forward_s, self.power_w = gpu, forward_s, power_w

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        self.gpu.run(self.forward_s, self.power_w)
        return self.inner(x, t)


def test_sampling_joules_per_image_and_model_call(meter: NvmlMeter, gpu: FakeGpu) -> None:
    model = ClockedModel(gpu, forward_s=0.0625, power_w=300.0)  # 4 DDIM steps: 0.25 s a run
    result = measure_workload(model, Workload.ddim(4, batch_size=2), meter, idle_s=2.0)

    m = result.measurement
    assert (m.idle_power_w, m.repeats, m.time_s, m.energy_j, m.mean_power_w) == (50.0, 4, 1.0, 300.0, 300.0)
    assert result.images == 8
    assert result.energy_j_per_image == 37.5  # 300 J / 8 images
    assert result.energy_j_per_model_call == 18.75  # 300 J / 16 batch steps
    assert result.energy_above_idle_j_per_image == 31.25  # (300 - 50 W x 1 s) / 8
    assert result.energy_above_idle_j_per_model_call == 15.625
    assert result.time_s_per_image == 0.125
    assert model.training  # mode restored
    d = json.loads(json.dumps(result.to_dict()))
    assert d["measurement"]["repeats"] == 4 and d["energy_j_per_image"] == 37.5


def test_train_step_joules(meter: NvmlMeter, gpu: FakeGpu) -> None:
    model = ClockedModel(gpu, forward_s=0.25, power_w=200.0).eval()
    before = [p.detach().clone() for p in model.parameters()]
    result = measure_train_step(model, Diffusion(), batch_size=2, meter=meter, idle_s=1.0)

    m = result.measurement
    assert (m.repeats, m.time_s, m.energy_j, m.idle_power_w) == (4, 1.0, 200.0, 50.0)
    assert result.steps == 4
    assert result.energy_j_per_step == 50.0
    assert result.energy_j_per_image == 25.0
    assert result.energy_above_idle_j_per_step == 37.5  # (200 - 50 W x 1 s) / 4
    assert result.energy_above_idle_j_per_image == 18.75
    assert result.time_s_per_step == 0.25
    assert not model.training  # mode restored
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # it trained
    assert json.loads(json.dumps(result.to_dict()))["steps"] == 4


def test_idle_reading_is_reused(meter: NvmlMeter, gpu: FakeGpu) -> None:
    meter.measure_idle_power_w(1.0)
    gpu.idle_power_w = 80.0  # a second idle reading would see this
    model = ClockedModel(gpu, forward_s=0.5, power_w=100.0)
    result = measure_workload(model, Workload.ddim(2), meter)
    assert result.measurement.idle_power_w == 50.0


def test_null_meter_raises_its_reason() -> None:
    model = build_model("sdit-tiny")
    with pytest.raises(MeterUnavailable, match="no NVIDIA GPU visible"):
        measure_workload(model, Workload.ddim(2), NullMeter("no NVIDIA GPU visible to NVML"))


@pytest.mark.parametrize("work", [Workload.respaced(3, batch_size=2, seed=5), Workload.forward(40, batch_size=2,
                                                                                              seed=5)])
def test_the_meter_runs_what_sample_draws_and_the_counter_counts(meter: NvmlMeter, gpu: FakeGpu,
                                                                  work: Workload) -> None:
    model = build_model("sdit-tiny-authors").eval()  # class-conditional, learned sigma: labels and 2C outputs
    calls: list[list[Tensor]] = []
    model.register_forward_pre_hook(lambda _m, args: calls.append([a.detach().clone() for a in args]))
    model.register_forward_hook(lambda *_: gpu.run(0.5, 100.0))  # each call costs fake GPU time
    runs = {}
    if work.is_sampling:
        sample(model, work)
        runs["sample"], calls[:] = calls[:], []
    profile_workload(model, work, name="authors")
    runs["profile"], calls[:] = calls[:], []
    result = measure_workload(model, work, meter, min_window_s=0.0, idle_s=1.0, warmup=0)
    assert result.repeats == 1
    runs["measure"] = calls
    first = runs["profile"]
    assert len(first) == work.model_calls and [len(args) for args in first] == [3] * work.model_calls  # x, t, y
    for name, seen in runs.items():
        assert len(seen) == len(first), name
        for args, expected in zip(seen, first, strict=True):
            assert all(torch.equal(a, b) for a, b in zip(args, expected, strict=True)), name
