"""Power meters behind one small interface: named windows that synchronise the device and read energy.

:mod:`profiling.meters.base` holds the interface (:class:`PowerMeter`), its result
(:class:`Measurement`) and errors; :mod:`profiling.meters.nvml` the NVIDIA GPU meter,
:mod:`profiling.meters.rapl` the CPU packages' meter, :mod:`profiling.meters.factory` the choice
between them (:func:`make_meter`). This package exports the names their callers use.
"""

from profiling.meters.base import (
    DeviceLost,
    Measurement,
    MeterError,
    MeterUnavailable,
    NullMeter,
    PowerMeter,
    WindowedMeter,
    WindowError,
)
from profiling.meters.factory import METER_KINDS, make_meter
from profiling.meters.nvml import NvmlMeter
from profiling.meters.rapl import RaplMeter

__all__ = [
    "METER_KINDS",
    "DeviceLost",
    "Measurement",
    "MeterError",
    "MeterUnavailable",
    "NullMeter",
    "NvmlMeter",
    "PowerMeter",
    "RaplMeter",
    "WindowError",
    "WindowedMeter",
    "make_meter",
]
