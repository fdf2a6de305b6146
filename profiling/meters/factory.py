"""The meter for a device: :func:`make_meter` picks NVML, RAPL or a :class:`NullMeter` saying why not."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from profiling.meters import rapl
from profiling.meters.base import MeterError, MeterUnavailable, NullMeter, PowerMeter, torch_synchronize
from profiling.meters.nvml import NvmlMeter

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
            (:class:`profiling.meters.rapl.RaplMeter`) for the CPU; ``"nvml"``: NVML only;
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
    if synchronize is None and device.type == "cuda":
        synchronize = torch_synchronize(device.index or 0)
    kwargs = {k: v for k, v in meter_kwargs.items() if k in ("clock", "sleep", "poll_interval_s")}
    try:
        return rapl.RaplMeter(root=rapl.DEFAULT_ROOT if root is None else root, synchronize=synchronize, **kwargs)
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
