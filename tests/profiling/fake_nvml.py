"""A fake ``pynvml`` for driving the real :class:`profiling.meters.NvmlMeter` without a GPU.

Time is a :class:`FakeClock` that only moves when told. A :class:`FakeGpu` keeps
an energy counter in millijoules that grows as work runs on it
(:meth:`FakeGpu.run`, :meth:`FakeGpu.idle`) and reports power in milliwatts,
either the power of the last work or a trace ``power_w(t)``. :class:`FakeNvml`
exposes the functions, error class and error codes that the meter uses, under
pynvml's names, and logs every call so tests can check their order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

# Error codes as pynvml numbers them.
NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_UNKNOWN = 999


class NVMLError(Exception):
    """pynvml's error: the code is in ``value``."""

    def __init__(self, value: int) -> None:
        super().__init__(f"fake NVML error {value}")
        self.value = value


class FakeClock:
    """Seconds that advance only through :meth:`advance`; safe to read from any thread."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._now_s = start_s
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now_s

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now_s += seconds


class FakeGpu:
    """One GPU: an energy counter, a power reading, a name and a UUID.

    Args:
        clock: The shared fake clock.
        idle_power_w: Draw while idle (:meth:`idle`, the meter's sleep).
        power_trace_w: If given, power reads return ``power_trace_w(clock())``
            instead of the power of the last work.
    """

    def __init__(
        self,
        clock: FakeClock,
        *,
        idle_power_w: float = 50.0,
        power_trace_w: Callable[[float], float] | None = None,
        name: str = "Fake GPU",
        uuid: str = "GPU-00000000-0000-0000-0000-000000000000",
    ) -> None:
        self.clock = clock
        self.idle_power_w = idle_power_w
        self.power_trace_w = power_trace_w
        self.name = name
        self.uuid = uuid
        self.energy_mj = 0.0
        self.power_w = idle_power_w

    def run(self, seconds: float, power_w: float) -> None:
        """Work for ``seconds`` at ``power_w``: the clock and the counter move together."""
        self.energy_mj += seconds * power_w * 1e3
        self.power_w = power_w
        self.clock.advance(seconds)

    def idle(self, seconds: float) -> None:
        """Sit idle for ``seconds`` (inject as the meter's sleep)."""
        self.run(seconds, self.idle_power_w)

    def read_power_mw(self) -> int:
        power_w = self.power_w if self.power_trace_w is None else self.power_trace_w(self.clock())
        return round(power_w * 1e3)


class FakeNvml:
    """Stands in for the ``pynvml`` module.

    Args:
        gpus: The GPUs NVML sees.
        has_counter: Whether ``nvmlDeviceGetTotalEnergyConsumption`` is supported.
        has_power: Whether ``nvmlDeviceGetPowerUsage`` is supported.
        init_error: An error code ``nvmlInit`` fails with (e.g. library not found).
        read_error: An error code every energy or power read fails with (e.g. no permission).
    """

    NVMLError = NVMLError
    NVML_ERROR_UNINITIALIZED = NVML_ERROR_UNINITIALIZED
    NVML_ERROR_INVALID_ARGUMENT = NVML_ERROR_INVALID_ARGUMENT
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_ERROR_NO_PERMISSION = NVML_ERROR_NO_PERMISSION
    NVML_ERROR_NOT_FOUND = NVML_ERROR_NOT_FOUND
    NVML_ERROR_DRIVER_NOT_LOADED = NVML_ERROR_DRIVER_NOT_LOADED
    NVML_ERROR_LIBRARY_NOT_FOUND = NVML_ERROR_LIBRARY_NOT_FOUND
    NVML_ERROR_GPU_IS_LOST = NVML_ERROR_GPU_IS_LOST
    NVML_ERROR_UNKNOWN = NVML_ERROR_UNKNOWN

    def __init__(
        self,
        gpus: list[FakeGpu],
        *,
        has_counter: bool = True,
        has_power: bool = True,
        init_error: int | None = None,
        read_error: int | None = None,
    ) -> None:
        self.gpus = gpus
        self.has_counter = has_counter
        self.has_power = has_power
        self.init_error = init_error
        self.read_error = read_error
        self.initialised = 0
        self.log: list[str] = []
        self.power_reads = 0
        self.failed_reads = 0
        self._lost = False
        self._lock = threading.Condition()

    # --- test controls ----------------------------------------------------------------

    def lose_gpu(self) -> None:
        """From now on, every call about a GPU fails with GPU_IS_LOST."""
        self._lost = True

    def record(self, event: str) -> None:
        """Append an event to the shared log (the fake synchronisation uses it too)."""
        with self._lock:
            self.log.append(event)

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 2.0) -> bool:
        """Block (in real time, at most ``timeout_s``) until ``predicate()`` holds after a read."""
        with self._lock:
            return self._lock.wait_for(predicate, timeout=timeout_s)

    # --- pynvml's functions -----------------------------------------------------------

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        if self.initialised == 0:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        self.initialised -= 1

    def nvmlDeviceGetCount(self) -> int:
        self._check_init()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        self._check_init()
        if not 0 <= index < len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return self.gpus[index]

    def nvmlDeviceGetUUID(self, handle: FakeGpu) -> str:
        self._check_gpu()
        return handle.uuid

    def nvmlDeviceGetName(self, handle: FakeGpu) -> bytes:
        self._check_gpu()
        return handle.name.encode()  # older pynvml returns bytes

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: FakeGpu) -> int:
        self._check_read()
        if not self.has_counter:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        self.record("energy")
        return int(handle.energy_mj)

    def nvmlDeviceGetPowerUsage(self, handle: FakeGpu) -> int:
        try:
            self._check_read()
            if not self.has_power:
                raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        except NVMLError:
            with self._lock:
                self.failed_reads += 1
                self._lock.notify_all()
            raise
        power_mw = handle.read_power_mw()
        with self._lock:
            self.log.append("power")
            self.power_reads += 1
            self._lock.notify_all()
        return power_mw

    def _check_init(self) -> None:
        if self.initialised == 0:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    def _check_gpu(self) -> None:
        self._check_init()
        if self._lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)

    def _check_read(self) -> None:
        self._check_gpu()
        if self.read_error is not None:
            raise NVMLError(self.read_error)
