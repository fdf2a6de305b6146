"""CPU package energy through Linux powercap RAPL, behind the :class:`~profiling.meters.base.PowerMeter` interface.

Linux exposes Intel's (and, under the same ``intel-rapl`` name, AMD's) Running Average
Power Limit energy counters in sysfs::

    /sys/class/powercap/intel-rapl:0/name                 package-0
    /sys/class/powercap/intel-rapl:0/energy_uj            microjoules, monotonic until it wraps
    /sys/class/powercap/intel-rapl:0/max_energy_range_uj  the value at which energy_uj wraps to 0
    /sys/class/powercap/intel-rapl:0:0/...                subzones (core, uncore, dram): not summed

:class:`RaplMeter` sums the top-level ``package-*`` zones (every CPU socket); subzones are
parts of their package and ``psys`` (whole platform, on some laptops) overlaps it, so
neither is added. What it measures is the CPU packages only: no DRAM, no GPU, no rest
of the machine.

Wrap-around. A counter that reads less than before has wrapped once:
``delta = now + max_energy_range_uj - before``. A window lasting longer than one wrap
period (hundreds of kJ: tens of minutes at full load) would lose whole wraps, so a
thread reads the counters every ``poll_interval_s`` during a window and adds the
deltas up; those readings also give the window's power trace
(:attr:`~profiling.meters.base.Measurement.samples`: the mean power between two consecutive
readings, at the middle of that interval; the energy itself is the counters' alone).

Permissions. Since Linux 5.10 ``energy_uj`` is readable by root only (the PLATYPUS
side channel); an unreadable counter is :class:`~profiling.meters.base.MeterUnavailable`
with one line saying which file and why.

The sysfs root is injectable (``root=``), as are the clock, the sleep and the device
synchronisation, so tests drive the real meter over a fake tree in a temporary directory.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from profiling.meters.base import Measurement, MeterError, MeterUnavailable, PeriodicReader, WindowedMeter

__all__ = ["DEFAULT_ROOT", "RaplMeter", "RaplZone", "find_package_zones"]

DEFAULT_ROOT = Path("/sys/class/powercap")
_TOP_ZONE = re.compile(r"^intel-rapl:(\d+)$")  # intel-rapl:0, intel-rapl:1; not intel-rapl:0:0 (subzones)


@dataclass(frozen=True)
class RaplZone:
    """One top-level RAPL zone: its sysfs directory, name (``package-0``) and wrap range in microjoules."""

    path: Path
    name: str
    max_energy_range_uj: int

    @property
    def energy_file(self) -> Path:
        return self.path / "energy_uj"


def _read_int(path: Path, what: str) -> int:
    """An integer sysfs file; unreadable or missing is MeterUnavailable, garbage is MeterError."""
    try:
        text = path.read_text()
    except PermissionError:
        raise MeterUnavailable(
            f"no permission to read {path}: RAPL counters are root-only on Linux >= 5.10 "
            f"(run as root, or grant read access to {what})"
        ) from None
    except FileNotFoundError:
        raise MeterUnavailable(f"RAPL zone {path.parent.name} has no {path.name}") from None
    except OSError as err:
        raise MeterUnavailable(f"cannot read {path}: {err.strerror or err}") from None
    try:
        return int(text.strip())
    except ValueError:
        raise MeterError(f"{path} does not hold an integer: {text.strip()[:40]!r}") from None


def find_package_zones(root: Path | str = DEFAULT_ROOT) -> list[RaplZone]:
    """The top-level ``package-*`` RAPL zones under ``root``, in socket order.

    Raises:
        MeterUnavailable: No powercap tree, no RAPL zone, no package zone, or a file
            that cannot be read (the reason names it).
        MeterError: A file that holds no integer.
    """
    root = Path(root)
    if not root.is_dir():
        raise MeterUnavailable(f"no RAPL: {root} does not exist (no powercap interface in this kernel or container)")
    tops = sorted(
        (int(m.group(1)), entry) for entry in root.iterdir() if (m := _TOP_ZONE.match(entry.name)) is not None
    )
    if not tops:
        raise MeterUnavailable(f"no RAPL: {root} has no intel-rapl:* zone (no RAPL driver, or not an x86 CPU)")
    zones = []
    names = []
    for _, path in tops:
        try:
            name = (path / "name").read_text().strip()
        except OSError as err:
            raise MeterUnavailable(f"cannot read {path / 'name'}: {err.strerror or err}") from None
        names.append(name)
        if not name.startswith("package"):
            continue  # psys and the like overlap the packages
        max_uj = _read_int(path / "max_energy_range_uj", "max_energy_range_uj")
        if max_uj <= 0:
            raise MeterError(f"{path / 'max_energy_range_uj'} is {max_uj}; a counter range must be > 0")
        zones.append(RaplZone(path=path, name=name, max_energy_range_uj=max_uj))
    if not zones:
        raise MeterUnavailable(f"no RAPL package zone under {root} (zones: {', '.join(names)})")
    return zones


def _delta_uj(before: int, now: int, max_range_uj: int) -> int:
    """Energy between two readings of one counter, allowing one wrap at ``max_range_uj``."""
    return now - before if now >= before else now + max_range_uj - before


class _Window(PeriodicReader):
    """One open window: the last reading of every zone, the energy so far, and a polling thread."""

    def __init__(self, meter: RaplMeter, time_s: float, readings: list[int]) -> None:
        super().__init__(self.advance, meter._poll_interval_s, "rapl-counter-poller")
        self.meter = meter
        self.start_s = time_s
        self.last = readings
        self.energy_uj = 0
        self.trace: list[tuple[float, float]] = [(time_s, 0.0)]  # (time_s, joules since start)
        self._lock = threading.Lock()

    def advance(self) -> None:
        """Read every counter now and add what each drew since the last reading."""
        t = self.meter._clock()
        now = self.meter._read_all()
        with self._lock:
            for zone, before, value in zip(self.meter.zones, self.last, now, strict=True):
                self.energy_uj += _delta_uj(before, value, zone.max_energy_range_uj)
            self.last = now
            self.trace.append((t, self.energy_uj / 1e6))


class RaplMeter(WindowedMeter):
    """Energy of the CPU packages through the Linux powercap RAPL counters.

    Args:
        root: The powercap sysfs directory (tests pass a fake tree).
        synchronize: Waits for queued device work before each reading (a CUDA
            synchronisation where a GPU runs the workload); nothing by default, as CPU
            work is done when its call returns.
        clock: Seconds, monotonic.
        sleep: Sleeps for the idle window.
        poll_interval_s: Period of the counter readings inside a window (wrap safety, power trace).

    Raises:
        MeterUnavailable: No RAPL, no package zone, or no permission (one line saying which).
        MeterError: A counter file holds garbage.
    """

    def __init__(
        self,
        *,
        root: Path | str = DEFAULT_ROOT,
        synchronize: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        poll_interval_s: float = 0.1,
    ) -> None:
        if poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be > 0, got {poll_interval_s}")
        self.zones = find_package_zones(root)
        self._synchronize = synchronize or (lambda: None)
        self._clock = clock
        self._sleep = sleep
        self._poll_interval_s = poll_interval_s
        self._idle_power_w: float | None = None
        self._open: dict[str, _Window] = {}
        self._closed = False
        self._read_all()  # fails now, not mid-window, if a counter is unreadable

    # --- PowerMeter -------------------------------------------------------------------

    @property
    def description(self) -> str:
        names = ", ".join(z.name for z in self.zones)
        return f"RAPL package energy counter ({names}): CPU packages only, no DRAM or GPU"

    # --- internals --------------------------------------------------------------------

    def _read_all(self) -> list[int]:
        return [_read_int(z.energy_file, "energy_uj") for z in self.zones]

    def _start(self) -> _Window:
        if self._closed:
            raise MeterError("the RAPL meter was closed")
        self._synchronize()
        t = self._clock()
        window = _Window(self, t, self._read_all())
        window.start()
        return window

    def _discard(self, window: _Window) -> None:
        window.stop()

    def _finish(self, name: str, window: _Window) -> Measurement:
        try:
            self._synchronize()
        finally:
            window.stop()
        if window.error is not None:
            err = window.error
            raise err if isinstance(err, MeterError) else MeterError(f"RAPL reading failed in window {name!r}: {err}")
        window.advance()
        trace = window.trace
        samples = tuple(  # mean power between consecutive counter readings, at the middle of each interval
            ((t0 + t1) / 2, (e1 - e0) / (t1 - t0))
            for (t0, e0), (t1, e1) in zip(trace, trace[1:], strict=False) if t1 > t0
        )
        return self._measurement(name, "counter", trace[-1][0] - window.start_s, window.energy_uj / 1e6,
                                 (window.start_s, trace[-1][0]), samples=samples)
