"""The RAPL CPU-package meter against a fake powercap sysfs tree: sums, wrap-around, idle, typed errors."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import pytest

from profiling.meters import MeterError, MeterUnavailable, NullMeter, WindowError, make_meter
from profiling.meters.rapl import RaplMeter, find_package_zones

MAX = 262_143_328_850  # a real package's max_energy_range_uj


class FakeRapl:
    """A powercap tree in a temporary directory, with a clock the test moves."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.now = 100.0
        root.mkdir(parents=True, exist_ok=True)

    def zone(self, zone: str, name: str, energy_uj: int | None = 0, max_uj: int | None = MAX) -> Path:
        path = self.root / zone
        path.mkdir()
        (path / "name").write_text(f"{name}\n")
        if energy_uj is not None:
            (path / "energy_uj").write_text(f"{energy_uj}\n")
        if max_uj is not None:
            (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
        return path

    def set(self, zone: str, energy_uj: int) -> None:
        tmp = self.root / zone / "energy_uj.tmp"  # replaced whole, as sysfs reads are: the poller never sees half
        tmp.write_text(f"{energy_uj}\n")
        os.replace(tmp, self.root / zone / "energy_uj")

    def add(self, zone: str, joules: float) -> None:
        """Advance one counter by ``joules``, wrapping at its range as the hardware does."""
        path = self.root / zone
        max_uj = int((path / "max_energy_range_uj").read_text())
        value = int((path / "energy_uj").read_text()) + round(joules * 1e6)
        self.set(zone, value - max_uj if value >= max_uj else value)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def rapl(tmp_path: Path) -> FakeRapl:
    fake = FakeRapl(tmp_path / "powercap")
    fake.zone("intel-rapl:0", "package-0", energy_uj=5_000_000)
    fake.zone("intel-rapl:0:0", "core", energy_uj=123)  # a subzone: part of package-0, never added
    return fake


def meter_for(fake: FakeRapl, **kwargs) -> RaplMeter:
    # The poller sleeps an hour: only the window's own readings count unless a test polls.
    return RaplMeter(root=fake.root, clock=fake.clock, sleep=fake.sleep, poll_interval_s=kwargs.pop("poll", 3600.0),
                     **kwargs)


def test_window_energy_is_the_counter_difference(rapl: FakeRapl) -> None:
    meter = meter_for(rapl)
    meter.begin_window("run")
    rapl.add("intel-rapl:0", 30.0)
    rapl.add("intel-rapl:0:0", 99.0)  # the subzone moves too; it is inside the package figure
    rapl.sleep(2.0)
    m = meter.end_window("run")
    assert (m.name, m.method, m.time_s, m.energy_j, m.mean_power_w) == ("run", "counter", 2.0, 30.0, 15.0)
    assert m.idle_power_w is None and m.energy_above_idle_j is None
    assert (m.window_start_s, m.window_end_s, m.power_samples) == (100.0, 102.0, 0)
    assert m.samples == ((101.0, 15.0),)  # one interval between the window's two readings: 30 J over 2 s
    assert meter.description == "RAPL package energy counter (package-0): CPU packages only, no DRAM or GPU"


def test_counter_wrap_around_at_max_energy_range(rapl: FakeRapl) -> None:
    rapl.set("intel-rapl:0", MAX - 1_000_000)  # 1 J before the wrap
    meter = meter_for(rapl)
    meter.begin_window("wrap")
    rapl.set("intel-rapl:0", 2_500_000)  # wrapped: 1 J to the top, then 2.5 J
    rapl.sleep(1.0)
    assert meter.end_window("wrap").energy_j == 3.5


def test_several_wraps_in_one_window_are_counted_by_the_poller(rapl: FakeRapl) -> None:
    small = 10_000_000  # a 10 J range, so a window can wrap twice
    fake = FakeRapl(rapl.root.parent / "small")
    fake.zone("intel-rapl:0", "package-0", energy_uj=0, max_uj=small)
    ticks = itertools.count()  # next() on it is atomic: the poller and the test both read the clock
    meter = RaplMeter(root=fake.root, clock=lambda: float(next(ticks)), poll_interval_s=0.005)  # 1 s a reading
    meter.begin_window("long")
    window = meter._open["long"]
    for _ in range(3):  # 3 x 8 J = 24 J over a 10 J range: two wraps
        fake.add("intel-rapl:0", 8.0)
        seen = len(window.trace)
        deadline = time.monotonic() + 10
        while len(window.trace) < seen + 2 and time.monotonic() < deadline:  # a reading begun after the write
            time.sleep(0.002)
        assert len(window.trace) >= seen + 2, "the poller never read the counter"
    m = meter.end_window("long")
    assert m.energy_j == pytest.approx(24.0, abs=1e-9)
    # The trace: the mean power of every interval between two readings (1 s each on this clock).
    assert m.window_end_s - m.window_start_s == len(m.samples) == m.time_s
    assert [w for _, w in m.samples if w] == pytest.approx([8.0, 8.0, 8.0])


def test_packages_are_summed_and_psys_is_not(rapl: FakeRapl) -> None:
    rapl.zone("intel-rapl:1", "package-1", energy_uj=7)
    rapl.zone("intel-rapl:2", "psys", energy_uj=0)  # the whole platform: overlaps the packages
    meter = meter_for(rapl)
    assert [z.name for z in meter.zones] == ["package-0", "package-1"]
    meter.begin_window("both")
    rapl.add("intel-rapl:0", 10.0)
    rapl.add("intel-rapl:1", 4.0)
    rapl.add("intel-rapl:2", 50.0)
    rapl.sleep(1.0)
    assert meter.end_window("both").energy_j == 14.0
    assert "(package-0, package-1)" in meter.description


def test_zones_are_in_socket_order(tmp_path: Path) -> None:
    fake = FakeRapl(tmp_path / "pc")
    for i in (10, 2, 0):
        fake.zone(f"intel-rapl:{i}", f"package-{i}")
    assert [z.name for z in find_package_zones(fake.root)] == ["package-0", "package-2", "package-10"]


def test_idle_power_is_kept_and_subtracted(rapl: FakeRapl) -> None:
    meter = meter_for(rapl)

    def idle_sleep(seconds: float) -> None:
        rapl.add("intel-rapl:0", 12.0 * seconds)  # 12 W while idle
        rapl.sleep(seconds)

    meter._sleep = idle_sleep
    assert meter.measure_idle_power_w(2.0) == 12.0
    assert meter.idle_power_w == 12.0
    meter.begin_window("work")
    rapl.add("intel-rapl:0", 100.0)
    rapl.sleep(4.0)
    m = meter.end_window("work")
    assert (m.energy_j, m.idle_power_w, m.energy_above_idle_j) == (100.0, 12.0, 52.0)  # 100 J - 12 W x 4 s


def test_windows_are_named_like_the_nvml_meter(rapl: FakeRapl) -> None:
    meter = meter_for(rapl)
    meter.begin_window("a")
    with pytest.raises(WindowError, match="'a' is already open"):
        meter.begin_window("a")
    with pytest.raises(WindowError, match="never begun"):
        meter.end_window("b")
    meter.cancel_window("a")
    with pytest.raises(WindowError):
        meter.end_window("a")
    meter.begin_window("c")
    meter.close()  # cancels "c"
    assert not meter.available and meter.reason == "the meter was closed"
    with pytest.raises(MeterError, match="closed"):
        meter.begin_window("d")


def test_a_window_without_time_is_an_error(rapl: FakeRapl) -> None:
    meter = meter_for(rapl)
    meter.begin_window("instant")
    with pytest.raises(MeterError, match="lasted 0.0 s"):
        meter.end_window("instant")


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda f: None, "no RAPL: {root} has no intel-rapl:* zone (no RAPL driver, or not an x86 CPU)"),
        (lambda f: f.zone("intel-rapl:0", "psys"), "no RAPL package zone under {root} (zones: psys)"),
        (lambda f: f.zone("intel-rapl:0", "package-0", energy_uj=None), "RAPL zone intel-rapl:0 has no energy_uj"),
        (lambda f: f.zone("intel-rapl:0", "package-0", max_uj=None),
         "RAPL zone intel-rapl:0 has no max_energy_range_uj"),
    ],
)
def test_missing_files_say_why_in_one_line(tmp_path: Path, build, reason: str) -> None:
    fake = FakeRapl(tmp_path / "pc")
    build(fake)
    with pytest.raises(MeterUnavailable) as err:
        RaplMeter(root=fake.root)
    assert err.value.reason == reason.format(root=fake.root)
    meter = make_meter("cpu", rapl_root=fake.root)
    assert isinstance(meter, NullMeter) and meter.reason == reason.format(root=fake.root)


def test_no_powercap_tree(tmp_path: Path) -> None:
    meter = make_meter("cpu", rapl_root=tmp_path / "absent")
    assert isinstance(meter, NullMeter)
    assert meter.reason == (f"no RAPL: {tmp_path / 'absent'} does not exist "
                            "(no powercap interface in this kernel or container)")


def test_unreadable_counter_says_root_only(rapl: FakeRapl, monkeypatch) -> None:
    real = Path.read_text

    def read_text(self: Path, *args, **kwargs) -> str:
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    meter = make_meter("cpu", rapl_root=rapl.root)
    assert isinstance(meter, NullMeter)
    assert meter.reason == (f"no permission to read {rapl.root / 'intel-rapl:0' / 'energy_uj'}: RAPL counters are "
                            "root-only on Linux >= 5.10 (run as root, or grant read access to energy_uj)")


def test_garbage_in_a_counter_is_a_meter_error(rapl: FakeRapl) -> None:
    meter = meter_for(rapl)
    meter.begin_window("w")
    rapl.root.joinpath("intel-rapl:0", "energy_uj").write_text("n/a\n")
    rapl.sleep(1.0)
    with pytest.raises(MeterError, match="does not hold an integer: 'n/a'"):
        meter.end_window("w")


def test_make_meter_picks_rapl_for_the_cpu_and_on_request(rapl: FakeRapl) -> None:
    assert isinstance(make_meter("cpu", rapl_root=rapl.root), RaplMeter)
    synced = []
    meter = make_meter("cuda:0", kind="cpu", rapl_root=rapl.root, synchronize=lambda: synced.append(1),
                       clock=rapl.clock, poll_interval_s=3600.0)
    assert isinstance(meter, RaplMeter)
    meter.begin_window("gpu work, CPU energy")
    rapl.sleep(1.0)
    meter.end_window("gpu work, CPU energy")
    assert synced == [1, 1]  # the GPU is synchronised at both ends of the window
    nvml_only = make_meter("cpu", kind="nvml", rapl_root=rapl.root)
    assert isinstance(nvml_only, NullMeter)
    assert nvml_only.reason == "device 'cpu' is not a CUDA GPU; NVML measures NVIDIA GPUs only"
    with pytest.raises(ValueError, match="unknown meter 'rapl'; known: auto, nvml, cpu"):
        make_meter("cpu", kind="rapl")
