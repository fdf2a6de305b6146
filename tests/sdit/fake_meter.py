"""A deterministic power meter for the tests of measured sampling, and ``make_meter`` returning it.

Tests only: the command line cannot choose it (``--meter`` takes ``auto``, ``nvml`` or ``cpu``); a test
puts :func:`fake_make_meter` in place of :func:`profiling.meters.make_meter`, in its own process or, under
torchrun, through ``tests/sdit/sdit_fake_meter.py``.

Every window of rank r lasts ``2 (r + 1)`` s and reads ``10 (r + 1)`` J whatever ran in it; idle reads 1 W.
"""

from __future__ import annotations

import os
from typing import Any

from profiling.meters import Measurement, PowerMeter, WindowError

IDLE_W = 1.0


def window_reading(rank: int) -> tuple[float, float]:
    """(seconds, joules) of every window of rank ``rank``."""
    return 2.0 * (rank + 1), 10.0 * (rank + 1)


class FakeMeter(PowerMeter):
    def __init__(self, rank: int) -> None:
        self.rank = rank
        self._idle_w: float | None = None
        self._open: set[str] = set()
        self.closed = False

    @property
    def available(self) -> bool:
        return not self.closed

    @property
    def reason(self) -> str | None:
        return None

    @property
    def description(self) -> str:
        return f"fake meter of rank {self.rank} (tests)"

    @property
    def idle_power_w(self) -> float | None:
        return self._idle_w

    def measure_idle_power_w(self, duration_s: float = 5.0) -> float:
        self._idle_w = IDLE_W
        return IDLE_W

    def begin_window(self, name: str) -> None:
        if name in self._open:
            raise WindowError(f"window {name!r} is already open")
        self._open.add(name)

    def end_window(self, name: str) -> Measurement:
        self._open.remove(name)
        time_s, energy_j = window_reading(self.rank)
        idle = self._idle_w
        return Measurement(name=name, method="counter", time_s=time_s, energy_j=energy_j,
                           mean_power_w=energy_j / time_s, idle_power_w=idle,
                           energy_above_idle_j=None if idle is None else energy_j - idle * time_s)

    def cancel_window(self, name: str) -> None:
        self._open.discard(name)

    def close(self) -> None:
        self.closed = True


def fake_make_meter(device: Any = None, *, kind: str = "auto", **_: Any) -> FakeMeter:
    """The :class:`FakeMeter` of this process's rank (``RANK`` of torchrun; 0 alone)."""
    return FakeMeter(int(os.environ.get("RANK", "0")))
