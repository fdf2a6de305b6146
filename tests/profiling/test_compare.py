"""The comparison study: one workload estimated and measured per target, exact round trip, torch-free reading."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from torch import Tensor, nn

from profiling.compare import MEASURE_FAILED, Comparison, compare
from profiling.conventions import COUNTING_CONVENTIONS
from profiling.meters import Measurement, NullMeter, NvmlMeter
from sdit.models import build_model
from sdit.workload import Workload
from tests.profiling.fake_nvml import FakeClock, FakeGpu, FakeNvml

ROOT = Path(__file__).resolve().parents[2]


class Clocked(nn.Module):
    """A real tiny model whose every forward costs fake GPU time and energy."""

    def __init__(self, gpu: FakeGpu, preset: str, forward_s: float, power_w: float) -> None:
        super().__init__()
        self.inner = build_model(preset)
        self.config = self.inner.config
        self.gpu, self.forward_s, self.power_w = gpu, forward_s, power_w

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        self.gpu.run(self.forward_s, self.power_w)
        return self.inner(x, t)


@pytest.fixture(scope="module")
def study() -> Comparison:
    gpu = FakeGpu(FakeClock(), idle_power_w=50.0)
    nvml = FakeNvml([gpu])
    meter = NvmlMeter(0, nvml=nvml, synchronize=lambda: None, clock=gpu.clock, sleep=gpu.idle)
    sdit = Clocked(gpu, "sdit-tiny", 0.0625, 300.0)  # 4 DDIM steps: 0.25 s a run
    dit = Clocked(gpu, "dit-tiny", 0.125, 200.0)  # 0.5 s a run
    return compare([("sdit", sdit), ("dit", dit)], Workload.ddim(4, batch_size=2, eta=1.0),
                   costs=["45nm-fp32", "loihi"], measure=True, device="cpu", idle_s=2.0,
                   meter_factory=lambda device: meter)


def test_every_target_is_profiled_and_measured_on_the_one_workload(study: Comparison) -> None:
    work = Workload.ddim(4, batch_size=2, eta=1.0)
    assert study.workload == work
    sdit, dit = study.target("sdit"), study.target("dit")
    assert (sdit.spiking, dit.spiking, sdit.kind, dit.kind) == (True, False, "sdit", "dit")
    assert sdit.profile.workload == dit.profile.workload == work
    assert len(sdit.profile.steps) == 4 and dit.profile.per_image["macs"] == 4 * 499_712
    m = sdit.measured
    assert m["workload"] == work.to_dict() and m["device"] == "cpu" and m["method"] == "counter"
    # 4 runs of 0.25 s fill the 1 s window: 300 J over 8 images and 16 model calls of the batch
    assert (m["repeats"], m["window_s"], m["images"], m["idle_power_w"]) == (4, 1.0, 8, 50.0)
    assert (m["energy_j_per_image"], m["energy_j_per_model_call"]) == (37.5, 18.75)
    assert m["energy_above_idle_j_per_image"] == 31.25  # (300 J - 50 W x 1 s) / 8
    assert dit.measured["repeats"] == 2 and dit.measured["energy_j_per_image"] == 50.0  # 200 J / 4 images
    inner = build_model("sdit-tiny")
    assert sdit.params == {"trainable": sum(p.numel() for p in inner.parameters() if p.requires_grad),
                           "total": sum(p.numel() for p in inner.parameters())}


def test_estimates_and_break_even_under_every_preset_and_convention(study: Comparison) -> None:
    sdit, dit = study.target("sdit"), study.target("dit")
    assert [(e.costs, e.convention) for e in sdit.estimates] == [
        (c, n) for c in ("45nm-fp32", "loihi") for n in COUNTING_CONVENTIONS]
    assert dit.estimate("45nm-fp32", "block").total_j == pytest.approx(4 * 499_712 * 4.6e-12)
    assert len(study.break_even) == 2 * len(COUNTING_CONVENTIONS)
    paper = study.break_even_of("sdit", "dit", "45nm-fp32", "paper")
    assert paper.baseline_j == dit.estimate("45nm-fp32", "strict").total_j
    # untrained tiny models: the SDiT costs more than the DiT even silent, a break-even no rate reaches, in words
    assert paper.firing_rate is None and paper.reason == "none: dearer than the baseline even when silent"
    strict = study.break_even_of("sdit", "dit", "45nm-fp32", "strict")
    assert strict.firing_rate is None and "does not depend on the firing rate" in strict.reason
    loihi = study.break_even_of("sdit", "dit", "loihi", "spikformer")
    assert loihi.firing_rate is None and "not defined by loihi" in loihi.reason
    sweep = next(e for e in sdit.estimates if (e.costs, e.convention) == ("45nm-fp32", "block")).sweep
    assert [p["firing_rate"] for p in sweep] == study.sweep_rates


def test_round_trip_is_exact_through_json(study: Comparison) -> None:
    again = Comparison.from_dict(json.loads(json.dumps(study.to_dict())))
    assert again == study
    assert again.to_dict() == study.to_dict()
    with pytest.raises(ValueError, match="not an sdit comparison"):
        Comparison.from_dict({"schema": "other"})
    for schema, reader in (("sdit.comparison/1", "sdit 0.1.0"), ("sdit.comparison/2", "sdit 0.2.0")):
        older = f"schema '{schema}', not 'sdit.comparison/3': it is read by {reader}"
        with pytest.raises(ValueError, match=older):
            Comparison.from_dict({**study.to_dict(), "schema": schema})


def test_each_cost_preset_is_stored_once(study: Comparison) -> None:
    text = json.dumps(study.to_dict())
    for costs in study.costs:
        assert text.count(json.dumps(costs.source)) == 1
    for target in study.to_dict()["targets"]:
        assert all(isinstance(e["estimate"]["costs"], str) for e in target["estimates"])


def test_the_measurement_keeps_its_power_trace_through_json(study: Comparison) -> None:
    meas = Measurement.from_dict(study.target("sdit").measured["measurement"])
    assert (meas.method, meas.time_s, meas.window_end_s - meas.window_start_s) == ("counter", 1.0, 1.0)
    assert len(meas.samples) >= 2  # the trace read beside the counter: at least the window's two ends
    assert (meas.samples[0][0], meas.samples[-1][0]) == (meas.window_start_s, meas.window_end_s)
    assert meas.samples[-1][1] == 300.0  # the fake GPU's power of the last work
    back = Comparison.from_dict(json.loads(json.dumps(study.to_dict())))
    assert Measurement.from_dict(back.target("sdit").measured["measurement"]) == meas


def test_reading_a_comparison_and_estimating_from_it_imports_no_torch(study: Comparison, tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(study.to_dict()))
    code = (
        "import json, sys; from pathlib import Path; from profiling.compare import Comparison; "
        "from profiling.energy import COST_PRESETS, estimate; import profiling.study, profiling.table3; "
        f"c = Comparison.from_dict(json.loads(Path({str(path)!r}).read_text())); "
        "e = estimate(c.target('dit').profile, COST_PRESETS['45nm-int8'], 'block'); "
        "assert abs(e.total_j - 4 * 499712 * 0.23e-12) < 1e-18, e.total_j; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'spikingjelly', 'sdit', 'numpy') "
        "and m not in ('sdit', 'sdit.workload')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={"PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_without_a_meter_the_reason_is_kept() -> None:
    study = compare([("dit", build_model("dit-tiny"))], Workload.forward(10), measure=True,
                    meter_factory=lambda device: NullMeter("no NVIDIA GPU visible to NVML"))
    assert study.targets[0].measured is None
    assert study.targets[0].measured_reason == "no NVIDIA GPU visible to NVML"
    assert study.break_even == []  # no spiking target


def test_a_meter_failing_mid_window_is_reported_not_raised() -> None:
    class Broken(NullMeter):
        available = True

        def measure_idle_power_w(self, seconds: float) -> float:
            from profiling.meters import DeviceLost

            raise DeviceLost("GPU 0 fell off the bus")

    study = compare([("dit", build_model("dit-tiny"))], Workload.forward(), measure=True, device="cpu",
                    meter_factory=lambda device: Broken("x"))
    assert study.targets[0].measured_reason == MEASURE_FAILED + "GPU 0 fell off the bus"
