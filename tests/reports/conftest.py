"""A study of the tiny presets over a 2-step DDIM run, built once per session."""

from __future__ import annotations

import pytest
from torch import nn

from profiling.compare import Comparison, compare
from profiling.energy import COST_PRESETS
from profiling.meters import NvmlMeter
from profiling.records import Profile
from profiling.study import RunInfo
from profiling.workloads import profile_workload
from reports.study import Study, study_from_comparison
from sdit.targets import load_target
from sdit.workload import Workload
from tests.profiling.fake_nvml import FakeClock, FakeGpu, FakeNvml

TINY = ("sdit-tiny", "dit-tiny")


def tiny_profiles(steps: int = 2) -> list[Profile]:
    return [profile_workload(load_target(name).model, Workload.ddim(steps), name=name) for name in TINY]


@pytest.fixture(scope="session")
def tiny_comparison() -> Comparison:
    return compare(list(TINY), Workload.ddim(2), costs=list(COST_PRESETS))


@pytest.fixture(scope="session")
def tiny_study(tiny_comparison: Comparison) -> Study:
    return study_from_comparison(tiny_comparison)


@pytest.fixture()
def run_info() -> RunInfo:
    return RunInfo(command="sdit compare sdit-tiny dit-tiny", created="2026-12-01 00:00:00 UTC",
                   versions={"torch": "test"}, device="cpu", git_revision="test", seed=0)


def clocked(gpu: FakeGpu, preset: str, forward_s: float, power_w: float) -> nn.Module:
    """A tiny preset whose every forward costs fake GPU time and energy (read back as power ``power_w``)."""
    model = load_target(preset).model
    model.register_forward_pre_hook(lambda module, args: gpu.run(forward_s, power_w))
    return model


@pytest.fixture(scope="session")
def measured_comparison() -> Comparison:
    """The tiny presets measured through the real NvmlMeter on a fake NVML (energy counter, power traced)."""
    gpu = FakeGpu(FakeClock(), idle_power_w=50.0)
    meter = NvmlMeter(0, nvml=FakeNvml([gpu]), synchronize=lambda: None, clock=gpu.clock, sleep=gpu.idle,
                      trace_interval_s=3600.0)  # the trace: power at each window's two ends, deterministic
    models = [("sdit-tiny", clocked(gpu, "sdit-tiny", 0.125, 300.0)),
              ("dit-tiny", clocked(gpu, "dit-tiny", 0.25, 200.0))]
    return compare(models, Workload.ddim(2), costs=list(COST_PRESETS), measure=True, device="cpu", idle_s=2.0,
                   meter_factory=lambda device: meter)


@pytest.fixture(scope="session")
def measured_study(measured_comparison: Comparison) -> Study:
    return study_from_comparison(measured_comparison)
