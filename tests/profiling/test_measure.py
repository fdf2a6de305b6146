"""Measured workloads over the real NvmlMeter and a fake NVML: minimum window, joules per image; a rank's
sampling window and the sum of the ranks' readings."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

from profiling.measure import (
    RankWindow,
    combine_rank_readings,
    measure_repeated,
    measure_train_step,
    measure_workload,
)
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


def test_a_rank_window_reads_the_drawing_alone_after_its_idle_reading(meter: NvmlMeter, gpu: FakeGpu) -> None:
    window = RankWindow(meter, rank=1, device="cuda:1", idle_s=2.0)
    gpu.run(3.0, 300.0)  # before the window (loading, reused batches): not in it
    with window(12):
        gpu.run(1.5, 250.0)
    gpu.run(4.0, 300.0)  # after it (the exchange, the features): not in it
    r = window.reading()
    assert (r["rank"], r["device"], r["images"], r["method"]) == (1, "cuda:1", 12, "counter")
    assert (r["time_s"], r["energy_j"], r["idle_power_w"]) == (1.5, 375.0, 50.0)
    assert r["energy_above_idle_j"] == 375.0 - 50.0 * 1.5
    assert r["meter"] == meter.description and "reason" not in r


def test_a_rank_window_keeps_why_it_read_nothing_and_lets_the_sampling_finish(
        meter: NvmlMeter, nvml: FakeNvml, gpu: FakeGpu) -> None:
    none = RankWindow(NullMeter("no sensor here"))
    with none(4):
        drawn = True
    assert drawn and none.reading()["reason"] == "no sensor here" and none.reading()["meter"] is None
    broken = RankWindow(meter)
    with broken(4):
        gpu.run(1.0, 100.0)
        nvml.lose_gpu()
    assert broken.reading()["reason"].startswith("measurement failed: GPU 0 is lost")
    idle = RankWindow(meter)  # a rank whose batches were all reused opens no window
    with idle(0):
        pass
    assert {k: idle.reading()[k] for k in ("images", "time_s", "energy_j")} == {"images": 0, "time_s": 0.0,
                                                                                "energy_j": 0.0}


def _reading(rank: int, images: int, energy_j: float, time_s: float, host: str = "h", meter: str | None = None,
             **extra: object) -> dict:
    return {"rank": rank, "host": host, "device": "cpu", "meter": meter or f"meter {rank}", "images": images,
            "method": "counter", "time_s": time_s, "energy_j": energy_j, "idle_power_w": 1.0,
            "energy_above_idle_j": energy_j - time_s, **extra}


def test_rank_readings_add_up_and_reused_images_are_not_counted() -> None:
    readings = [_reading(0, 4, 10.0, 2.0), _reading(1, 8, 20.5, 4.0), _reading(2, 0, 0.0, 0.0)]
    m = combine_rank_readings(readings, "nvml", num_images=16)
    assert m["available"] and m["reason"] is None and m["ranks"] == readings
    assert (m["energy_j"], m["energy_above_idle_j"], m["rank_seconds"], m["longest_window_s"]) == (30.5, 24.5, 6.0, 4.0)
    assert (m["images_sampled"], m["images_reused"]) == (12, 4)
    assert m["energy_j_per_image"] == 30.5 / 12 and m["energy_above_idle_j_per_image"] == 24.5 / 12
    assert m["meters"] == ["meter 0", "meter 1", "meter 2"] and m["units"]["energy"] == "J"
    assert json.loads(json.dumps(m)) == m


def test_one_rank_that_cannot_read_makes_the_whole_measurement_unavailable() -> None:
    readings = [_reading(0, 8, 10.0, 2.0), {**_reading(1, 8, 0, 0), "reason": "no permission to read X"}]
    m = combine_rank_readings(readings, "cpu", num_images=16)
    assert not m["available"] and m["reason"] == "rank 1: no permission to read X"
    assert "energy_j" not in m and "energy_j_per_image" not in m  # never a partial sum
    assert m["ranks"] == readings


def test_ranks_that_read_one_meter_on_one_host_are_not_summed() -> None:
    rapl = "RAPL package energy counter (package-0): CPU packages only, no DRAM or GPU"
    readings = [_reading(0, 8, 10.0, 2.0, meter=rapl), _reading(1, 8, 11.0, 2.0, meter=rapl)]
    m = combine_rank_readings(readings, "cpu", num_images=16)
    assert not m["available"] and "energy_j" not in m
    assert m["reason"].startswith(f"ranks 0, 1 read one meter on host h ({rapl}): each reading holds the other")
    other_hosts = [_reading(0, 8, 10.0, 2.0, meter=rapl), _reading(1, 8, 11.0, 2.0, host="h2", meter=rapl)]
    assert combine_rank_readings(other_hosts, "cpu", num_images=16)["energy_j"] == 21.0
    resumed = [_reading(0, 0, 0.0, 0.0, meter=rapl), _reading(1, 8, 11.0, 2.0, meter=rapl)]  # one window only
    assert combine_rank_readings(resumed, "cpu", num_images=16)["energy_j"] == 11.0
    nothing = combine_rank_readings([_reading(0, 0, 0.0, 0.0)], "cpu", num_images=16)
    assert nothing["reason"] == "nothing was sampled: every batch was taken from --shards"
