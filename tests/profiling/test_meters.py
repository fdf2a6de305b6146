"""The real NvmlMeter driven by a fake NVML: windows, idle, polling, and typed errors."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from profiling.meters import (
    DeviceLost,
    Measurement,
    MeterError,
    MeterUnavailable,
    NullMeter,
    NvmlMeter,
    WindowError,
    make_meter,
)
from tests.profiling.fake_nvml import (
    NVML_ERROR_GPU_IS_LOST,
    NVML_ERROR_LIBRARY_NOT_FOUND,
    NVML_ERROR_NO_PERMISSION,
    NVML_ERROR_UNKNOWN,
    FakeClock,
    FakeGpu,
    FakeNvml,
)


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture()
def gpu(clock: FakeClock) -> FakeGpu:
    return FakeGpu(clock, idle_power_w=50.0)


def nvml_meter(nvml: FakeNvml, gpu: FakeGpu, **kwargs: object) -> NvmlMeter:
    """The real meter over the fake: synchronisation is logged, sleeping idles the fake GPU."""
    return NvmlMeter(
        0,
        nvml=nvml,
        synchronize=lambda: nvml.record("sync"),
        clock=gpu.clock,
        sleep=gpu.idle,
        **kwargs,
    )


def test_counter_window_synchronises_at_begin_and_end(gpu: FakeGpu) -> None:
    nvml = FakeNvml([gpu])
    meter = nvml_meter(nvml, gpu, trace_interval_s=None)
    assert meter.method == "counter"
    assert meter.description == "NVML total-energy counter, GPU 0 (Fake GPU)"
    nvml.log.clear()

    meter.begin_window("work")
    nvml.record("work")
    gpu.run(2.0, 250.0)
    m = meter.end_window("work")

    assert nvml.log == ["sync", "energy", "work", "sync", "energy"]
    assert (m.name, m.method, m.time_s, m.energy_j, m.mean_power_w) == ("work", "counter", 2.0, 500.0, 250.0)
    assert (m.idle_power_w, m.energy_above_idle_j, m.repeats, m.power_samples) == (None, None, 1, 0)
    assert (m.samples, m.window_start_s, m.window_end_s) == ((), 0.0, 2.0)
    assert meter.trace_reason == "no power trace was asked for"


def test_counter_window_carries_a_power_trace_beside_the_counter(clock: FakeClock) -> None:
    gpu = FakeGpu(clock, power_trace_w=lambda t: 100.0 + 10.0 * t)
    nvml = FakeNvml([gpu])
    meter = nvml_meter(nvml, gpu, trace_interval_s=0.001)
    assert meter.trace_reason is None
    clock.advance(1.0)
    meter.begin_window("work")
    for _ in range(3):
        reads = nvml.power_reads
        gpu.run(0.5, 200.0)
        assert nvml.wait_for(lambda n=reads: nvml.power_reads > n)  # the thread read power mid-window
    m = meter.end_window("work")

    assert (m.method, m.time_s, m.energy_j, m.power_samples) == ("counter", 1.5, 300.0, 0)  # the counter's
    assert (m.window_start_s, m.window_end_s) == (1.0, 2.5)
    assert len(m.samples) >= 5 and m.samples[0] == (1.0, 110.0) and m.samples[-1] == (2.5, 125.0)
    assert all(w == 100.0 + 10.0 * t for t, w in m.samples)
    assert [t for t, _ in m.samples] == sorted(t for t, _ in m.samples)


def test_counter_without_power_reading_measures_and_says_there_is_no_trace(gpu: FakeGpu) -> None:
    meter = nvml_meter(FakeNvml([gpu], has_power=False), gpu)
    assert meter.method == "counter"
    assert meter.trace_reason == "no power trace: GPU 0 does not support NVML's request to read power"
    meter.begin_window("w")
    gpu.run(1.0, 100.0)
    m = meter.end_window("w")
    assert (m.energy_j, m.samples) == (100.0, ())


def test_idle_is_a_quiet_window_and_is_subtracted(gpu: FakeGpu) -> None:
    nvml = FakeNvml([gpu])
    meter = nvml_meter(nvml, gpu)
    nvml.log.clear()

    assert meter.measure_idle_power_w(4.0) == 50.0  # 200 J over 4 s
    assert nvml.log == ["sync", "energy", "sync", "energy"]  # nothing ran in between
    assert meter.idle_power_w == 50.0

    meter.begin_window("w")
    gpu.run(1.5, 210.0)
    m = meter.end_window("w")
    assert m.energy_j == 315.0
    assert m.idle_power_w == 50.0
    assert m.energy_above_idle_j == 315.0 - 50.0 * 1.5  # 240 J


def test_nested_windows_are_measured_independently(gpu: FakeGpu) -> None:
    meter = nvml_meter(FakeNvml([gpu]), gpu)
    meter.begin_window("outer")
    gpu.run(1.0, 100.0)
    meter.begin_window("inner")
    gpu.run(1.0, 300.0)
    inner = meter.end_window("inner")
    outer = meter.end_window("outer")
    assert (inner.energy_j, outer.energy_j) == (300.0, 400.0)


def test_window_names_are_checked(gpu: FakeGpu) -> None:
    meter = nvml_meter(FakeNvml([gpu]), gpu)
    with pytest.raises(WindowError, match="never begun"):
        meter.end_window("nope")
    meter.begin_window("w")
    with pytest.raises(WindowError, match="already open"):
        meter.begin_window("w")


def test_cancel_window_stops_polling(gpu: FakeGpu) -> None:
    nvml = FakeNvml([gpu], has_counter=False)
    meter = nvml_meter(nvml, gpu, poll_interval_s=0.001)
    meter.begin_window("w")
    assert nvml.wait_for(lambda: nvml.power_reads >= 3)  # probe, begin sample, one from the thread
    meter.cancel_window("w")
    reads = nvml.power_reads
    assert not nvml.wait_for(lambda: nvml.power_reads > reads, timeout_s=0.02)
    with pytest.raises(WindowError, match="never begun"):
        meter.cancel_window("w")


def test_polling_fallback_integrates_the_power_trace(clock: FakeClock) -> None:
    # 50 W idle until t = 4 s, then a ramp of 40 W/s: piecewise linear, so the
    # trapezoid rule is exact at whatever instants the thread samples.
    gpu = FakeGpu(clock, power_trace_w=lambda t: 50.0 if t <= 4.0 else 50.0 + 40.0 * (t - 4.0))
    nvml = FakeNvml([gpu], has_counter=False)
    meter = nvml_meter(nvml, gpu, poll_interval_s=0.001)
    assert meter.method == "polling"
    assert meter.description == "NVML power polled every 1 ms, GPU 0 (Fake GPU)"

    assert meter.measure_idle_power_w(4.0) == 50.0
    meter.begin_window("ramp")
    for _ in range(4):
        reads = nvml.power_reads
        gpu.run(0.5, 0.0)  # the trace, not this power, is what is read
        assert nvml.wait_for(lambda n=reads: nvml.power_reads > n)  # the thread sampled mid-window
    m = meter.end_window("ramp")

    assert m.method == "polling"
    assert m.time_s == 2.0
    assert m.energy_j == 2.0 * 50.0 + 40.0 * 2.0**2 / 2  # 180 J: integral of 50 + 40 t over [0, 2]
    assert m.mean_power_w == 90.0
    assert m.energy_above_idle_j == 180.0 - 50.0 * 2.0
    assert m.power_samples >= 6  # begin, one per step from the thread, end
    assert len(m.samples) == m.power_samples and (m.window_start_s, m.window_end_s) == (4.0, 6.0)
    assert m.samples[0] == (4.0, 50.0) and m.samples[-1] == (6.0, 130.0)  # the integrated readings are the trace


def test_force_polling_where_the_counter_exists(gpu: FakeGpu) -> None:
    meter = nvml_meter(FakeNvml([gpu]), gpu, force_polling=True)
    assert meter.method == "polling"


def test_device_lost_mid_window_with_counter(gpu: FakeGpu) -> None:
    nvml = FakeNvml([gpu])
    meter = nvml_meter(nvml, gpu)
    meter.begin_window("w")
    gpu.run(1.0, 200.0)
    nvml.lose_gpu()
    with pytest.raises(DeviceLost, match="GPU 0 is lost"):
        meter.end_window("w")


def test_device_lost_mid_window_while_polling(gpu: FakeGpu) -> None:
    nvml = FakeNvml([gpu], has_counter=False)
    meter = nvml_meter(nvml, gpu, poll_interval_s=0.001)
    meter.begin_window("w")
    nvml.lose_gpu()
    assert nvml.wait_for(lambda: nvml.failed_reads >= 1)  # the thread hit the loss
    with pytest.raises(DeviceLost, match=f"NVML code {NVML_ERROR_GPU_IS_LOST}"):
        meter.end_window("w")
    failed = nvml.failed_reads
    assert not nvml.wait_for(lambda: nvml.failed_reads > failed, timeout_s=0.02)  # the thread stopped


def test_counter_going_backwards_is_an_error(gpu: FakeGpu) -> None:
    meter = nvml_meter(FakeNvml([gpu]), gpu)
    gpu.run(1.0, 100.0)
    meter.begin_window("w")
    gpu.energy_mj = 0.0  # a driver reload resets the counter
    with pytest.raises(MeterError, match="went backwards"):
        meter.end_window("w")


def test_other_nvml_errors_become_meter_errors(gpu: FakeGpu) -> None:
    nvml = FakeNvml([gpu])
    meter = nvml_meter(nvml, gpu)
    meter.begin_window("w")
    nvml.read_error = NVML_ERROR_UNKNOWN
    expected = f"NVML could not read the energy counter on GPU 0: code {NVML_ERROR_UNKNOWN}"
    with pytest.raises(MeterError, match=expected):
        meter.end_window("w")


def test_gpu_chosen_by_uuid_with_or_without_prefix(clock: FakeClock) -> None:
    gpus = [FakeGpu(clock, name="A", uuid="GPU-aaaa"), FakeGpu(clock, name="B", uuid="GPU-bbbb")]
    meter = NvmlMeter(0, nvml=FakeNvml(gpus), synchronize=lambda: None, gpu_uuid="BBBB", clock=clock)
    assert meter.description.endswith("(B)")
    with pytest.raises(MeterUnavailable, match="has UUID cccc"):
        NvmlMeter(0, nvml=FakeNvml(gpus), synchronize=lambda: None, gpu_uuid="cccc", clock=clock)


def test_close_shuts_nvml_down(gpu: FakeGpu) -> None:
    nvml = FakeNvml([gpu])
    with nvml_meter(nvml, gpu) as meter:
        assert nvml.initialised == 1
    assert nvml.initialised == 0
    assert not meter.available
    with pytest.raises(MeterError, match="closed"):
        meter.begin_window("w")


def test_measurement_to_dict_is_json(gpu: FakeGpu) -> None:
    meter = nvml_meter(FakeNvml([gpu]), gpu, trace_interval_s=3600.0)  # the trace: the window's two ends
    meter.measure_idle_power_w(1.0)
    meter.begin_window("w")
    gpu.run(1.0, 100.0)
    m = meter.end_window("w")
    d = m.to_dict()
    assert Measurement.from_dict(json.loads(json.dumps(d))) == m
    assert json.loads(json.dumps(d)) == {
        "name": "w",
        "method": "counter",
        "time_s": 1.0,
        "energy_j": 100.0,
        "mean_power_w": 100.0,
        "idle_power_w": 50.0,
        "energy_above_idle_j": 50.0,
        "repeats": 1,
        "power_samples": 0,
        "samples": [[1.0, 50.0], [2.0, 100.0]],
        "window_start_s": 1.0,
        "window_end_s": 2.0,
    }


# --- make_meter: a working meter, or a NullMeter with one line saying why --------------


def fake_sync() -> None:
    """Stands in for torch.cuda.synchronize, so make_meter does not ask torch for a GPU."""


def test_make_meter_returns_nvml_meter(gpu: FakeGpu) -> None:
    nvml = FakeNvml([gpu])
    meter = make_meter("cuda:0", nvml=nvml, synchronize=fake_sync, clock=gpu.clock)
    assert isinstance(meter, NvmlMeter) and meter.available and meter.reason is None


def test_library_missing_gives_null_meter_with_reason(gpu: FakeGpu) -> None:
    nvml = FakeNvml([gpu], init_error=NVML_ERROR_LIBRARY_NOT_FOUND)
    meter = make_meter("cuda", nvml=nvml, synchronize=fake_sync)
    assert isinstance(meter, NullMeter) and not meter.available
    assert meter.reason == "NVML library not found: no NVIDIA driver on this machine"
    assert meter.description == "no power meter: NVML library not found: no NVIDIA driver on this machine"
    assert meter.idle_power_w is None
    for call in (lambda: meter.begin_window("w"), lambda: meter.end_window("w"), meter.measure_idle_power_w):
        with pytest.raises(MeterUnavailable, match="NVML library not found"):
            call()


def test_pynvml_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml now raises ImportError
    with pytest.raises(MeterUnavailable, match=r"nvidia-ml-py \(pynvml\) is not installed"):
        NvmlMeter(0, synchronize=fake_sync)
    meter = make_meter("cuda", synchronize=fake_sync)
    assert isinstance(meter, NullMeter)
    assert meter.reason.startswith("nvidia-ml-py (pynvml) is not installed")


def test_no_gpu_gives_null_meter_with_reason(clock: FakeClock) -> None:
    nvml = FakeNvml([])
    meter = make_meter("cuda", nvml=nvml, synchronize=fake_sync)
    assert isinstance(meter, NullMeter)
    assert meter.reason == "no NVIDIA GPU visible to NVML"
    assert nvml.initialised == 0  # NVML was shut down again


def test_missing_gpu_index(gpu: FakeGpu) -> None:
    meter = make_meter("cuda:1", nvml=FakeNvml([gpu]), synchronize=fake_sync)
    assert isinstance(meter, NullMeter)
    assert meter.reason == "NVML sees 1 GPU(s); there is no GPU 1"


def test_cpu_device_gives_null_meter_from_nvml() -> None:
    meter = make_meter("cpu", kind="nvml")
    assert isinstance(meter, NullMeter)
    assert meter.reason == "device 'cpu' is not a CUDA GPU; NVML measures NVIDIA GPUs only"


def test_no_permission_gives_null_meter(gpu: FakeGpu) -> None:
    nvml = FakeNvml([gpu], read_error=NVML_ERROR_NO_PERMISSION)
    meter = make_meter("cuda", nvml=nvml, synchronize=fake_sync)
    assert isinstance(meter, NullMeter)
    assert meter.reason == "no permission to read GPU power through NVML"


def test_neither_counter_nor_power_gives_null_meter(gpu: FakeGpu) -> None:
    nvml = FakeNvml([gpu], has_counter=False, has_power=False)
    meter = make_meter("cuda", nvml=nvml, synchronize=fake_sync)
    assert isinstance(meter, NullMeter)
    assert meter.reason == "GPU 0 does not support NVML's request to read power"
    assert nvml.initialised == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_this_machine_without_gpu_says_why() -> None:
    meter = make_meter("cuda")
    assert isinstance(meter, NullMeter)
    assert meter.reason  # e.g. "NVML library not found: no NVIDIA driver on this machine"
