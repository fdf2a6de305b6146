"""GPU power meters behind one small interface (ARCHITECTURE.md §4, measured energy); the CPU meter is profiling.rapl.

A meter measures named windows: :meth:`PowerMeter.begin_window` and
:meth:`PowerMeter.end_window` synchronise the device and read energy, so the
window covers exactly the work queued inside it. :class:`NvmlMeter` reads the
NVML total-energy counter (Volta and newer) and falls back, explicitly, to a
thread that polls instantaneous power and integrates it. :class:`NullMeter`
stands in where nothing can be measured and says why. NVML's errors are turned
into :class:`MeterError` and its subclasses with one-line messages.

Idle power is measured separately, in a quiet window (:meth:`PowerMeter.measure_idle_power_w`),
and every later :class:`Measurement` reports it beside the energy above idle.
Measure idle before the workload: a GPU that just worked keeps its clocks up
for a while and reads high.

The hardware library is injected (``nvml=``), as are the device synchronisation,
the clock and the sleep, so tests drive the real meter against a fake NVML.
"""

from __future__ import annotations

import importlib
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any, Literal

import torch

__all__ = [
    "METER_KINDS",
    "DeviceLost",
    "Measurement",
    "MeterError",
    "MeterUnavailable",
    "NullMeter",
    "NvmlMeter",
    "PowerMeter",
    "WindowError",
    "WindowedMeter",
    "make_meter",
]

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


# NVML error codes by the constant names pynvml gives them; looked up on the
# injected module so a fake NVML only needs the same names.
_UNAVAILABLE_CODES = {
    "NVML_ERROR_LIBRARY_NOT_FOUND": "NVML library not found: no NVIDIA driver on this machine",
    "NVML_ERROR_DRIVER_NOT_LOADED": "the NVIDIA driver is not loaded",
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH": "NVML and the NVIDIA kernel driver versions differ",
    "NVML_ERROR_NO_PERMISSION": "no permission to read GPU power through NVML",
    "NVML_ERROR_GPU_NOT_FOUND": "no NVIDIA GPU visible to NVML",
}
_LOST_CODES = ("NVML_ERROR_GPU_IS_LOST", "NVML_ERROR_RESET_REQUIRED")


@dataclass(frozen=True)
class _PowerSample:
    time_s: float
    power_w: float


class _Poller:
    """A thread that samples power every ``interval_s`` until stopped; errors are kept, not dropped."""

    def __init__(self, read_power_w: Callable[[], float], clock: Callable[[], float], interval_s: float):
        self._read_power_w = read_power_w
        self._clock = clock
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.samples: list[_PowerSample] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="nvml-power-poller", daemon=True)

    def sample(self) -> None:
        t = self._clock()
        self.samples.append(_PowerSample(t, self._read_power_w()))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.sample()
            except Exception as err:  # kept for end_window, which raises it
                self.error = err
                return


@dataclass(frozen=True)
class _CounterStart:
    time_s: float
    energy_mj: int
    trace: _Poller | None = None  # power read beside the counter, for the trace only


class WindowedMeter(PowerMeter):
    """What the hardware meters share (NVML here, RAPL in :mod:`profiling.rapl`): the named windows,
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


class NvmlMeter(WindowedMeter):
    """Energy of one NVIDIA GPU through NVML.

    Uses ``nvmlDeviceGetTotalEnergyConsumption`` (millijoules since the driver
    loaded; Volta and newer) where the GPU has it; otherwise a thread polls
    ``nvmlDeviceGetPowerUsage`` (milliwatts) every ``poll_interval_s`` and the
    samples are integrated by the trapezoid rule. The counter is the better
    reading: polling misses anything shorter than the interval, and on many GPUs
    the power reading is itself an average over the last second.

    Args:
        gpu_index: Index of the GPU, for NVML and for the default synchronisation;
            with ``gpu_uuid`` given, NVML finds the GPU by UUID and this is torch's index.
        nvml: The ``pynvml`` module or a stand-in; imported when ``None``.
        synchronize: Waits for the device's queued work; ``torch.cuda.synchronize``
            on ``cuda:gpu_index`` when ``None``.
        gpu_uuid: UUID of the GPU, with or without NVML's ``GPU-`` prefix (torch reports
            it without); names the GPU unambiguously where ``CUDA_VISIBLE_DEVICES``
            renumbers devices.
        clock: Seconds, monotonic.
        sleep: Sleeps for the idle window.
        poll_interval_s: Sampling period of the polling fallback.
        force_polling: Poll even where the counter exists (to compare the two).
        trace_interval_s: With the counter, also read power every ``trace_interval_s`` inside each
            window, for :attr:`Measurement.samples` (the power trace; the energy is the counter's
            alone). ``None``: no trace. Where the GPU has a counter but no power reading, windows
            carry no trace and :attr:`trace_reason` says why.

    Raises:
        MeterUnavailable: No library, no driver, no such GPU, no permission, or the
            GPU reports neither energy nor power.
        DeviceLost: The GPU is lost.
        MeterError: Any other NVML failure.
    """

    def __init__(
        self,
        gpu_index: int = 0,
        *,
        nvml: Any = None,
        synchronize: Callable[[], None] | None = None,
        gpu_uuid: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        poll_interval_s: float = 0.05,
        force_polling: bool = False,
        trace_interval_s: float | None = 0.1,
    ) -> None:
        if poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be > 0, got {poll_interval_s}")
        if trace_interval_s is not None and trace_interval_s <= 0:
            raise ValueError(f"trace_interval_s must be > 0 or None, got {trace_interval_s}")
        self._trace_interval_s = trace_interval_s
        self._trace_reason: str | None = None if trace_interval_s else "no power trace was asked for"
        self._nvml = _import_pynvml() if nvml is None else nvml
        self._gpu = f"GPU {gpu_index}"
        self._synchronize = synchronize or _torch_synchronize(gpu_index)
        self._clock = clock
        self._sleep = sleep
        self._poll_interval_s = poll_interval_s
        self._idle_power_w: float | None = None
        self._open: dict[str, _CounterStart | _Poller] = {}
        self._closed = False

        self._call("initialise NVML", self._nvml.nvmlInit)
        try:
            count = self._call("count GPUs", self._nvml.nvmlDeviceGetCount)
            if count == 0:
                raise MeterUnavailable("no NVIDIA GPU visible to NVML")
            if gpu_uuid is not None:
                self._handle = self._find_by_uuid(gpu_uuid, count)
            elif not 0 <= gpu_index < count:
                raise MeterUnavailable(f"NVML sees {count} GPU(s); there is no GPU {gpu_index}")
            else:
                self._handle = self._call("find GPU", self._nvml.nvmlDeviceGetHandleByIndex, gpu_index)
            name = self._call("read the GPU name", self._nvml.nvmlDeviceGetName, self._handle)
            self._gpu_name = name.decode() if isinstance(name, bytes) else str(name)
            self._method: MeterMethod = "polling" if force_polling else self._probe_counter()
            if self._method == "polling":
                self._read_power_w()  # fails now, not mid-window, if there is no power sensor
            elif self._trace_interval_s is not None:
                try:
                    self._read_power_w()
                except MeterUnavailable as err:  # the counter alone still measures
                    self._trace_interval_s, self._trace_reason = None, f"no power trace: {err.reason}"
        except MeterError:
            self._nvml.nvmlShutdown()
            raise

    # --- PowerMeter -------------------------------------------------------------------

    @property
    def method(self) -> MeterMethod:
        """``"counter"`` or ``"polling"``: how windows are measured."""
        return self._method

    @property
    def trace_reason(self) -> str | None:
        """Why windows carry no power trace, or ``None`` when they do."""
        return None if self._method == "polling" else self._trace_reason

    @property
    def description(self) -> str:
        how = (
            "total-energy counter"
            if self._method == "counter"
            else (f"power polled every {self._poll_interval_s * 1e3:g} ms")
        )
        return f"NVML {how}, {self._gpu} ({self._gpu_name})"

    # --- internals --------------------------------------------------------------------

    def _shutdown(self) -> None:
        self._call("shut NVML down", self._nvml.nvmlShutdown)

    def _start_idle(self) -> _CounterStart | _Poller:
        return self._start(trace=False)  # the idle window carries no power trace

    def _start(self, trace: bool = True) -> _CounterStart | _Poller:
        if self._closed:
            raise MeterError("the NVML meter was closed")
        self._synchronize()
        if self._method == "counter":
            t = self._clock()
            energy_mj = self._read_energy_mj()
            interval = self._trace_interval_s if trace else None
            return _CounterStart(t, energy_mj, None if interval is None else self._start_poller(interval))
        return self._start_poller(self._poll_interval_s)

    def _discard(self, handle: _CounterStart | _Poller) -> None:
        poller = handle if isinstance(handle, _Poller) else handle.trace
        if poller is not None:
            poller.stop()

    def _start_poller(self, interval_s: float) -> _Poller:
        poller = _Poller(self._read_power_w, self._clock, interval_s)
        poller.sample()
        poller.start()
        return poller

    def _finish(self, name: str, start: _CounterStart | _Poller) -> Measurement:
        poller = start if isinstance(start, _Poller) else start.trace
        try:
            self._synchronize()
        finally:
            if poller is not None:
                poller.stop()
        if poller is not None and poller.error is not None:
            raise self._translate(poller.error, f"poll power in window {name!r}") from poller.error
        if isinstance(start, _CounterStart):
            t = self._clock()
            energy_mj = self._read_energy_mj()
            if energy_mj < start.energy_mj:
                raise MeterError(
                    f"NVML energy counter of {self._gpu} went backwards in window {name!r} "
                    f"({start.energy_mj} -> {energy_mj} mJ): was the driver reloaded?"
                )
            time_s, energy_j, samples = t - start.time_s, (energy_mj - start.energy_mj) / 1e3, 0
            window = (start.time_s, t)
        else:
            start.sample()
            time_s, energy_j = _integrate(start.samples)
            samples = len(start.samples)
            window = (start.samples[0].time_s, start.samples[-1].time_s)
        if poller is not None and poller is not start:
            poller.sample()  # the trace's last point, at the window's end
        trace = () if poller is None else tuple((p.time_s, p.power_w) for p in poller.samples)
        return self._measurement(name, self._method, time_s, energy_j, window, power_samples=samples, samples=trace)

    def _find_by_uuid(self, gpu_uuid: str, count: int) -> Any:
        """The handle of the GPU whose UUID matches, with or without NVML's ``GPU-`` prefix."""
        want = _bare_uuid(gpu_uuid)
        for index in range(count):
            handle = self._call("find GPU", self._nvml.nvmlDeviceGetHandleByIndex, index)
            uuid = self._call("read a GPU UUID", self._nvml.nvmlDeviceGetUUID, handle)
            if _bare_uuid(uuid.decode() if isinstance(uuid, bytes) else str(uuid)) == want:
                return handle
        raise MeterUnavailable(f"none of the {count} GPU(s) NVML sees has UUID {gpu_uuid}")

    def _probe_counter(self) -> MeterMethod:
        try:
            self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except self._nvml.NVMLError as err:
            if _code(err) == getattr(self._nvml, "NVML_ERROR_NOT_SUPPORTED", None):
                return "polling"
            raise self._translate(err, "read the energy counter") from err
        return "counter"

    def _read_energy_mj(self) -> int:
        return int(
            self._call(
                "read the energy counter", self._nvml.nvmlDeviceGetTotalEnergyConsumption, self._handle
            )
        )

    def _read_power_w(self) -> float:
        return self._call("read power", self._nvml.nvmlDeviceGetPowerUsage, self._handle) / 1e3

    def _call(self, action: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Call an NVML function, turning its errors into ours."""
        try:
            return fn(*args)
        except self._nvml.NVMLError as err:
            raise self._translate(err, action) from err

    def _translate(self, err: BaseException, action: str) -> MeterError:
        if isinstance(err, MeterError):
            return err
        if not isinstance(err, self._nvml.NVMLError):
            return MeterError(f"could not {action} on {self._gpu}: {type(err).__name__}: {err}")
        code = _code(err)
        for const in _LOST_CODES:
            if code == getattr(self._nvml, const, None):
                return DeviceLost(f"{self._gpu} is lost (NVML code {code}) while trying to {action}")
        for const, why in _UNAVAILABLE_CODES.items():
            if code == getattr(self._nvml, const, None):
                return MeterUnavailable(why)
        if code == getattr(self._nvml, "NVML_ERROR_NOT_SUPPORTED", None):
            return MeterUnavailable(f"{self._gpu} does not support NVML's request to {action}")
        return MeterError(f"NVML could not {action} on {self._gpu}: code {code} ({_describe(err)})")


def _bare_uuid(uuid: str) -> str:
    return uuid.strip().lower().removeprefix("gpu-")


def _code(err: BaseException) -> Any:
    return getattr(err, "value", None)


def _describe(err: BaseException) -> str:
    """The error's text; pynvml looks unknown codes up in the library, which may itself fail."""
    try:
        return str(err)
    except Exception as inner:  # only to describe an error that is already being raised
        return f"no description ({type(inner).__name__})"


def _integrate(samples: list[_PowerSample]) -> tuple[float, float]:
    """Trapezoid rule over (time, power) samples: returns (time_s, energy_j)."""
    energy_j = 0.0
    for a, b in zip(samples, samples[1:], strict=False):
        energy_j += (b.time_s - a.time_s) * (a.power_w + b.power_w) / 2
    return samples[-1].time_s - samples[0].time_s, energy_j


def _import_pynvml() -> ModuleType:
    try:
        return importlib.import_module("pynvml")
    except ImportError as err:
        raise MeterUnavailable(f"nvidia-ml-py (pynvml) is not installed: {err}") from err


def _torch_synchronize(gpu_index: int) -> Callable[[], None]:
    def synchronize() -> None:
        torch.cuda.synchronize(gpu_index)

    return synchronize


METER_KINDS = ("auto", "nvml", "cpu")


def make_meter(
    device: torch.device | str | int | None = None,
    *,
    kind: str = "auto",
    nvml: Any = None,
    synchronize: Callable[[], None] | None = None,
    rapl_root: Any = None,
    **meter_kwargs: Any,
) -> PowerMeter:
    """The meter for ``device``: an :class:`NvmlMeter`, a RAPL CPU meter, or a :class:`NullMeter` saying why not.

    Args:
        device: A CUDA device (``"cuda"``, ``"cuda:1"``, an index) or ``"cpu"``; ``None``
            means ``cuda:0``.
        kind: ``"auto"``: NVML for a CUDA device, the CPU packages' RAPL counters
            (:class:`profiling.rapl.RaplMeter`) for the CPU; ``"nvml"``: NVML only;
            ``"cpu"``: RAPL whatever the device (a GPU workload is then synchronised
            but only the CPU packages' energy is read).
        nvml: A stand-in for ``pynvml`` (tests).
        synchronize: A stand-in for the device synchronisation (tests); without it
            torch must see the CUDA device, and the GPU is matched to NVML by UUID.
        rapl_root: The powercap sysfs directory (tests); default ``/sys/class/powercap``.
        **meter_kwargs: Passed on to the meter (clock, sleep, poll_interval_s, ...).

    Returns:
        A working meter, or a :class:`NullMeter` whose ``reason`` is one printable line.

    Raises:
        ValueError: ``kind`` is none of :data:`METER_KINDS`.
        DeviceLost: The GPU is there but lost.
        MeterError: NVML or RAPL failed in a way that is not plain unavailability.
    """
    if kind not in METER_KINDS:
        raise ValueError(f"unknown meter {kind!r}; known: {', '.join(METER_KINDS)}")
    if device is None:
        device = torch.device("cuda", 0)
    elif isinstance(device, int):
        device = torch.device("cuda", device)
    device = torch.device(device)
    if kind == "cpu" or (kind == "auto" and device.type == "cpu"):
        return _make_rapl_meter(device, synchronize, rapl_root, meter_kwargs)
    if device.type != "cuda":
        return NullMeter(f"device {str(device)!r} is not a CUDA GPU; NVML measures NVIDIA GPUs only")
    index = device.index or 0
    gpu_uuid = None
    if synchronize is None:
        if not torch.cuda.is_available():
            why = "torch has no CUDA support" if torch.version.cuda is None else "torch sees no CUDA GPU"
            return NullMeter(_no_gpu_reason(nvml, why))
        if index >= torch.cuda.device_count():
            return NullMeter(f"torch sees {torch.cuda.device_count()} CUDA GPU(s); there is no cuda:{index}")
        gpu_uuid = _torch_uuid(index)
    try:
        return NvmlMeter(index, nvml=nvml, synchronize=synchronize, gpu_uuid=gpu_uuid, **meter_kwargs)
    except MeterUnavailable as err:
        return NullMeter(err.reason)


def _make_rapl_meter(device: torch.device, synchronize: Callable[[], None] | None, root: Any,
                     meter_kwargs: dict[str, Any]) -> PowerMeter:
    """A RAPL meter (synchronising ``device`` if it is a GPU), or a NullMeter saying why not."""
    from profiling.rapl import DEFAULT_ROOT, RaplMeter

    if synchronize is None and device.type == "cuda":
        synchronize = _torch_synchronize(device.index or 0)
    kwargs = {k: v for k, v in meter_kwargs.items() if k in ("clock", "sleep", "poll_interval_s")}
    try:
        return RaplMeter(root=DEFAULT_ROOT if root is None else root, synchronize=synchronize, **kwargs)
    except MeterUnavailable as err:
        return NullMeter(err.reason)


def _no_gpu_reason(nvml: Any, torch_why: str) -> str:
    """Why there is no GPU: NVML's reason (no driver, ...) where it has one, else torch's."""
    try:
        meter = NvmlMeter(0, nvml=nvml, synchronize=lambda: None)
    except MeterUnavailable as err:
        return err.reason
    except MeterError as err:
        return f"{torch_why}; NVML also failed: {err}"
    meter.close()
    return f"{torch_why}, though NVML sees a GPU"


def _torch_uuid(index: int) -> str | None:
    """The UUID torch reports for ``cuda:index``, or None where torch does not say."""
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    return None if uuid is None else str(uuid)
