"""The power-meter interface, its result type and its errors; the meters' shared window logic.

A meter measures named windows: :meth:`PowerMeter.begin_window` and
:meth:`PowerMeter.end_window` synchronise the device and read energy, so the
window covers exactly the work queued inside it. :class:`NullMeter` stands in
where nothing can be measured and says why. Hardware errors are turned into
:class:`MeterError` and its subclasses with one-line messages.

Idle power is measured separately, in a quiet window (:meth:`PowerMeter.measure_idle_power_w`),
and every later :class:`Measurement` reports it beside the energy above idle.
Measure idle before the workload: a GPU that just worked keeps its clocks up
for a while and reads high.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

MeterMethod = Literal["counter", "polling"]


class MeterError(RuntimeError):
    """A power measurement failed."""


class MeterUnavailable(MeterError):
    """Nothing can be measured here: no library, no GPU, no permission, no sensor.

    Attributes:
        reason: One line saying why, fit to print as is.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DeviceLost(MeterError):
    """The GPU fell off the bus or needs a reset; readings from it are meaningless."""


class WindowError(MeterError):
    """A window name was reused while open, or closed without being opened."""


@dataclass(frozen=True)
class Measurement:
    """Energy over one named window, between two device synchronisations.

    Attributes:
        name: The window's name.
        method: ``"counter"`` (NVML total-energy counter) or ``"polling"``
            (power samples integrated by the trapezoid rule).
        time_s: Wall time between the two synchronised readings.
        energy_j: Energy the whole GPU drew in the window, idle draw included.
        mean_power_w: ``energy_j / time_s``.
        idle_power_w: The meter's idle reading at the time, or ``None`` if none was taken.
        energy_above_idle_j: ``energy_j - idle_power_w * time_s``, or ``None`` without
            an idle reading. Can be slightly negative for a window that did almost nothing.
        repeats: How many times the workload ran inside the window (1 unless a
            caller repeated it to fill a minimum window).
        power_samples: Power readings integrated into ``energy_j`` (polling); 0 for the counter.
        samples: The power trace: every ``(t_s, watts)`` reading taken in the window, ``t_s`` on
            the meter's clock (the same clock as ``window_start_s``). Polling: the readings
            integrated. Counter: readings taken beside the counter for the trace only (``()`` where
            the meter took none: the counter was read at the window's two ends only).
        window_start_s: When the window opened, on the meter's clock (seconds; ``None`` if unknown).
        window_end_s: When it closed; ``window_end_s - window_start_s == time_s``.
    """

    name: str
    method: MeterMethod
    time_s: float
    energy_j: float
    mean_power_w: float
    idle_power_w: float | None
    energy_above_idle_j: float | None
    repeats: int = 1
    power_samples: int = 0
    samples: tuple[tuple[float, float], ...] = ()
    window_start_s: float | None = None
    window_end_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field; ``samples`` as a list of ``[t_s, watts]`` pairs."""
        out = asdict(self)
        out["samples"] = [[t, w] for t, w in self.samples]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        """The inverse of :meth:`to_dict` (a dict written before ``samples`` existed reads with no trace)."""
        fields = dict(data)
        fields["samples"] = tuple((float(t), float(w)) for t, w in fields.get("samples", ()))
        return cls(**fields)


class PowerMeter(ABC):
    """Measures the energy of named windows on one device."""

    @property
    @abstractmethod
    def available(self) -> bool:
        """Whether this meter can measure anything."""

    @property
    @abstractmethod
    def reason(self) -> str | None:
        """Why nothing can be measured; ``None`` for a working meter."""

    @property
    @abstractmethod
    def description(self) -> str:
        """One line naming the device and method, or the reason nothing is measured."""

    @property
    @abstractmethod
    def idle_power_w(self) -> float | None:
        """The last idle reading, or ``None`` before :meth:`measure_idle_power_w`."""

    @abstractmethod
    def measure_idle_power_w(self, duration_s: float = 5.0) -> float:
        """Measure idle power over a quiet window of ``duration_s``, keep it and return it."""

    @abstractmethod
    def begin_window(self, name: str) -> None:
        """Synchronise the device and start measuring the window ``name``."""

    @abstractmethod
    def end_window(self, name: str) -> Measurement:
        """Synchronise the device and return the energy of the window ``name``."""

    @abstractmethod
    def cancel_window(self, name: str) -> None:
        """Drop the open window ``name`` without reading it (the work inside it failed)."""

    @abstractmethod
    def close(self) -> None:
        """Release the hardware library; the meter cannot be used afterwards."""

    def __enter__(self) -> PowerMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullMeter(PowerMeter):
    """The meter for a machine where nothing can be measured; every window raises.

    Args:
        reason: One line saying why, e.g. ``"NVML library not found: no NVIDIA driver"``.
    """

    def __init__(self, reason: str) -> None:
        self._reason = reason

    @property
    def available(self) -> bool:
        return False

    @property
    def reason(self) -> str:
        return self._reason

    @property
    def description(self) -> str:
        return f"no power meter: {self._reason}"

    @property
    def idle_power_w(self) -> float | None:
        return None

    def measure_idle_power_w(self, duration_s: float = 5.0) -> float:
        raise MeterUnavailable(self._reason)

    def begin_window(self, name: str) -> None:
        raise MeterUnavailable(self._reason)

    def end_window(self, name: str) -> Measurement:
        raise MeterUnavailable(self._reason)

    def cancel_window(self, name: str) -> None:
        raise MeterUnavailable(self._reason)

    def close(self) -> None:
        """Nothing to release."""


class WindowedMeter(PowerMeter):
    """What the hardware meters share (:mod:`profiling.meters.nvml`, :mod:`profiling.meters.rapl`): the named windows,
    the idle reading, closing, and turning a window's time and energy into a :class:`Measurement`.

    ``_open`` maps each open window's name to what :meth:`_start` returned; :meth:`_finish`
    reads it into a :class:`Measurement` (through :meth:`_measurement`) and :meth:`_discard` drops
    it unread. Subclasses set ``_open``, ``_closed``, ``_idle_power_w`` and ``_sleep`` in ``__init__``.
    """

    _open: dict[str, Any]
    _closed: bool
    _idle_power_w: float | None

    @property
    def available(self) -> bool:
        return not self._closed

    @property
    def reason(self) -> str | None:
        return "the meter was closed" if self._closed else None

    @property
    def idle_power_w(self) -> float | None:
        return self._idle_power_w

    def measure_idle_power_w(self, duration_s: float = 5.0) -> float:
        """Measure idle power: synchronise and read, sleep ``duration_s`` with nothing queued, read again.

        The reading is kept and reported in every later :class:`Measurement`.
        """
        if duration_s <= 0:
            raise ValueError(f"idle duration must be > 0 s, got {duration_s}")
        handle = self._start_idle()
        try:
            self._sleep(duration_s)
        except BaseException:
            self._discard(handle)
            raise
        idle = self._finish("idle", handle)
        self._idle_power_w = idle.mean_power_w
        return idle.mean_power_w

    def close(self) -> None:
        if self._closed:
            return
        for name in list(self._open):
            self.cancel_window(name)
        self._closed = True
        self._shutdown()

    def _shutdown(self) -> None:
        """Release the meter's library or device once, at :meth:`close` (nothing by default)."""

    def _start_idle(self) -> Any:
        """Start the idle window's reading (:meth:`_start` unless a meter reads idle differently)."""
        return self._start()

    def _measurement(self, name: str, method: MeterMethod, time_s: float, energy_j: float,
                     window: tuple[float, float], power_samples: int = 0,
                     samples: tuple[tuple[float, float], ...] = ()) -> Measurement:
        """The :class:`Measurement` of one window, with the idle reading and the energy above it."""
        if time_s <= 0:
            raise MeterError(f"window {name!r} lasted {time_s} s by the meter's clock; no power to report")
        idle_w = self._idle_power_w
        return Measurement(
            name=name,
            method=method,
            time_s=time_s,
            energy_j=energy_j,
            mean_power_w=energy_j / time_s,
            idle_power_w=idle_w,
            energy_above_idle_j=None if idle_w is None else energy_j - idle_w * time_s,
            power_samples=power_samples,
            samples=samples,
            window_start_s=window[0],
            window_end_s=window[1],
        )

    @abstractmethod
    def _start(self) -> Any:
        """Synchronise and start one window's reading."""

    @abstractmethod
    def _finish(self, name: str, handle: Any) -> Measurement:
        """Synchronise and read the window that ``handle`` started."""

    @abstractmethod
    def _discard(self, handle: Any) -> None:
        """Stop what ``handle`` runs (a poller) without reading it."""

    def begin_window(self, name: str) -> None:
        if name in self._open:
            raise WindowError(f"window {name!r} is already open")
        self._open[name] = self._start()

    def end_window(self, name: str) -> Measurement:
        return self._finish(name, self._pop_window(name))

    def cancel_window(self, name: str) -> None:
        self._discard(self._pop_window(name))

    def _pop_window(self, name: str) -> Any:
        try:
            return self._open.pop(name)
        except KeyError:
            raise WindowError(f"window {name!r} was never begun (open: {sorted(self._open)})") from None


class PeriodicReader:
    """A daemon thread that calls ``read()`` every ``interval_s`` until :meth:`stop`; the first error ends it and
    is kept in ``error`` for the owner's end of window to raise (a meter never drops a failed reading)."""

    def __init__(self, read: Callable[[], None], interval_s: float, name: str) -> None:
        self._read = read
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._read()
            except Exception as err:  # kept for the owner, which raises it
                self.error = err
                return


def torch_synchronize(gpu_index: int) -> Callable[[], None]:
    """The default device synchronisation: ``torch.cuda.synchronize`` on ``cuda:gpu_index``."""
    import torch

    def synchronize() -> None:
        torch.cuda.synchronize(gpu_index)

    return synchronize
