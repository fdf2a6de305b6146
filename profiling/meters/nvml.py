"""GPU energy through NVML (:class:`NvmlMeter`), behind the :class:`~profiling.meters.base.PowerMeter` interface.

:class:`NvmlMeter` reads the NVML total-energy counter (Volta and newer) and falls back,
explicitly, to a thread that polls instantaneous power and integrates it. NVML's errors are
turned into :class:`~profiling.meters.base.MeterError` and its subclasses with one-line messages.

The hardware library is injected (``nvml=``), as are the device synchronisation,
the clock and the sleep, so tests drive the real meter against a fake NVML.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from profiling.meters.base import (
    DeviceLost,
    Measurement,
    MeterError,
    MeterMethod,
    MeterUnavailable,
    PeriodicReader,
    WindowedMeter,
    torch_synchronize,
)

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


class _Poller(PeriodicReader):
    """Power sampled every ``interval_s`` until stopped; errors are kept, not dropped."""

    def __init__(self, read_power_w: Callable[[], float], clock: Callable[[], float], interval_s: float):
        super().__init__(self.sample, interval_s, "nvml-power-poller")
        self._read_power_w = read_power_w
        self._clock = clock
        self.samples: list[_PowerSample] = []

    def sample(self) -> None:
        t = self._clock()
        self.samples.append(_PowerSample(t, self._read_power_w()))


@dataclass(frozen=True)
class _CounterStart:
    time_s: float
    energy_mj: int
    trace: _Poller | None = None  # power read beside the counter, for the trace only


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
        self._synchronize = synchronize or torch_synchronize(gpu_index)
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
