"""Measured energy of a workload (:class:`~sdit.workload.Workload`) and of one training step (docs/conventions.md).

The counter needs windows of a second or more to be read well, so a workload
repeats inside one window until the window lasts ``min_window_s``: a first,
short window times it, and the repeat count grows until a window is long
enough. Idle power is read first, in a quiet window, and reported beside the
energy; "above idle" numbers subtract ``idle_power_w * time_s``.

Under ``torchrun`` each rank measures its own sampling window (:class:`RankWindow`) and rank 0 adds
the ranks' readings up (:func:`gather_rank_measurements`, :func:`combine_rank_readings`).

These functions return data; nothing here prints or writes files.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from profiling.meters import Measurement, MeterError, PowerMeter
from sdit import distributed
from sdit.diffusion import Diffusion, run_steps
from sdit.workload import Workload

__all__ = [
    "RANK_WINDOW",
    "RankWindow",
    "TrainStepEnergy",
    "WorkloadEnergy",
    "combine_rank_readings",
    "gather_rank_measurements",
    "measure_repeated",
    "measure_train_step",
    "measure_workload",
]


@dataclass(frozen=True)
class TrainStepEnergy:
    """Measured energy of a training step (loss, backward, optimizer step).

    Attributes:
        batch_size: Training images per step.
        steps: Steps inside the measured window (the measurement's ``repeats``).
        energy_j_per_step: Whole-GPU energy per training step, idle draw included.
        energy_j_per_image: Per training image.
        energy_above_idle_j_per_step: Per step, less ``idle_power_w`` over its time.
        energy_above_idle_j_per_image: Per image, likewise.
        time_s_per_step: Window time per step.
        measurement: The window: time, energy, mean and idle power, repeats, method.
    """

    batch_size: int
    steps: int
    energy_j_per_step: float
    energy_j_per_image: float
    energy_above_idle_j_per_step: float
    energy_above_idle_j_per_image: float
    time_s_per_step: float
    measurement: Measurement

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``measurement`` is nested."""
        return asdict(self)


def measure_repeated(
    meter: PowerMeter,
    name: str,
    workload: Callable[[], object],
    *,
    min_window_s: float = 1.0,
    warmup: int = 1,
    max_windows: int = 8,
) -> Measurement:
    """Measure ``workload`` in a window it fills, repeated, for at least ``min_window_s``.

    Runs ``warmup`` unmeasured calls, then windows of ``n`` calls: ``n = 1`` first,
    then ``max(n + 1, ceil(n * min_window_s / time_s))`` until a window lasts
    ``min_window_s``. Only that last window is returned; the shorter ones are timing.

    Returns:
        The last window, with ``repeats`` set to its number of calls.

    Raises:
        MeterError: No window reached ``min_window_s`` in ``max_windows`` tries, or the meter failed.
    """
    if min_window_s < 0:
        raise ValueError(f"min_window_s must be >= 0, got {min_window_s}")
    for _ in range(warmup):
        workload()
    repeats = 1
    for _ in range(max_windows):
        meter.begin_window(name)
        try:
            for _ in range(repeats):
                workload()
        except BaseException:
            meter.cancel_window(name)
            raise
        measurement = meter.end_window(name)
        if measurement.time_s >= min_window_s:
            return replace(measurement, repeats=repeats)
        repeats = max(repeats + 1, math.ceil(repeats * min_window_s / measurement.time_s))
    raise MeterError(
        f"window {name!r} stayed under {min_window_s} s in {max_windows} window(s); "
        f"{repeats} repeats would be next"
    )


@dataclass(frozen=True)
class WorkloadEnergy:
    """Measured energy of one :class:`~sdit.workload.Workload`, repeated to fill a window.

    Attributes:
        workload: What ran (the same object a profile of it records).
        method: The meter's method: ``counter`` (NVML total-energy counter) or ``polling``.
        images: Images the measured window produced (``batch_size * repeats``).
        repeats: Runs of the whole workload inside the window.
        window_s: Length of the measured window.
        idle_power_w: Idle power read before the workload, subtracted in the above-idle figures.
        energy_j_per_image: Whole-GPU energy per image over the workload, idle draw included.
        energy_above_idle_j_per_image: Per image, less ``idle_power_w`` over its time.
        energy_j_per_model_call: Whole-GPU energy per model call of the whole batch.
        energy_above_idle_j_per_model_call: Per model call of the batch, less ``idle_power_w`` over its time.
        time_s_per_image: Window time per image.
        measurement: The window itself.
    """

    workload: Workload
    method: str
    images: int
    repeats: int
    window_s: float
    idle_power_w: float
    energy_j_per_image: float
    energy_above_idle_j_per_image: float
    energy_j_per_model_call: float
    energy_above_idle_j_per_model_call: float
    time_s_per_image: float
    measurement: Measurement

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``workload`` and ``measurement`` are nested."""
        return {**asdict(self), "workload": self.workload.to_dict(), "measurement": self.measurement.to_dict()}


def measure_workload(
    model: nn.Module,
    workload: Workload,
    meter: PowerMeter,
    *,
    min_window_s: float = 1.0,
    idle_s: float = 5.0,
    warmup: int = 1,
) -> WorkloadEnergy:
    """Joules per image of ``workload`` on the device of ``model``'s parameters.

    Every run is :func:`sdit.diffusion.run_steps` of the workload: the noise its seed draws, then its
    model calls (what :func:`sdit.diffusion.sample` draws and :func:`profiling.workloads.profile_workload`
    counts).

    Raises:
        MeterError: The meter failed or is unavailable.
    """
    device = _device_of(model)
    idle_w = _idle_power_w(meter, idle_s)

    def run() -> None:
        for _ in run_steps(model, workload, device=device):
            pass

    was_training = model.training
    model.eval()
    try:
        m = measure_repeated(meter, workload.kind, run, min_window_s=min_window_s, warmup=warmup)
    finally:
        model.train(was_training)
    images, calls = workload.batch_size * m.repeats, workload.model_calls * m.repeats
    above_j = m.energy_j - idle_w * m.time_s
    return WorkloadEnergy(
        workload=workload, method=m.method, images=images, repeats=m.repeats, window_s=m.time_s,
        idle_power_w=idle_w, energy_j_per_image=m.energy_j / images,
        energy_above_idle_j_per_image=above_j / images, energy_j_per_model_call=m.energy_j / calls,
        energy_above_idle_j_per_model_call=above_j / calls,
        time_s_per_image=m.time_s / images, measurement=m,
    )


def measure_train_step(
    model: nn.Module,
    diffusion: Diffusion,
    batch_size: int,
    meter: PowerMeter,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    x0: Tensor | None = None,
    min_window_s: float = 1.0,
    idle_s: float = 5.0,
    warmup: int = 1,
    seed: int = 0,
) -> TrainStepEnergy:
    """Joules per training step and per image: DDPM loss, backward, optimizer step.

    This trains: the model's weights change. It runs in train mode (restored after)
    on the device of its parameters.

    Args:
        model: An eps-predicting model with a ``config`` giving ``in_channels`` and ``image_size``.
        diffusion: The noise schedule whose :meth:`~sdit.diffusion.Diffusion.loss` is used.
        batch_size: Images per step.
        meter: A working meter.
        optimizer: Defaults to AdamW (lr 1e-4) over the model's parameters.
        x0: A (B, C, H, W) batch of clean images in [-1, 1]; uniform noise in [-1, 1] if None.
        min_window_s: Shortest accepted window; steps repeat to fill it.
        idle_s: Length of the quiet window for idle power.
        warmup: Unmeasured steps first (optimizer state, allocator).
        seed: Seed of the default batch and of the timesteps and noise drawn.

    Raises:
        MeterError: The meter failed or is unavailable.
    """
    _check_counts(batch_size=batch_size)
    cfg = model.config
    device = _device_of(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    if x0 is None:
        shape = (batch_size, cfg.in_channels, cfg.image_size, cfg.image_size)
        x0 = torch.rand(shape, device=device, generator=generator) * 2 - 1  # (B, C, H, W)
    elif x0.shape[0] != batch_size:
        raise ValueError(f"x0 holds {x0.shape[0]} images, batch_size is {batch_size}")
    if optimizer is None:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    idle_w = _idle_power_w(meter, idle_s)

    def step() -> None:
        loss = diffusion.loss(model, x0, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    was_training = model.training
    model.train()
    try:
        m = measure_repeated(meter, "train_step", step, min_window_s=min_window_s, warmup=warmup)
    finally:
        model.train(was_training)
    above_j = m.energy_j - idle_w * m.time_s
    images = batch_size * m.repeats
    return TrainStepEnergy(
        batch_size=batch_size,
        steps=m.repeats,
        energy_j_per_step=m.energy_j / m.repeats,
        energy_j_per_image=m.energy_j / images,
        energy_above_idle_j_per_step=above_j / m.repeats,
        energy_above_idle_j_per_image=above_j / images,
        time_s_per_step=m.time_s / m.repeats,
        measurement=m,
    )


RANK_WINDOW = ("each rank's own sampling: drawing its batches and saving them to --shards; not loading the model, "
               "the idle reading, batches reused from --shards, the exchange of samples between ranks, the feature "
               "and metric passes, nor a rank's draw while it waits for the others")


class RankWindow:
    """One rank's measured window around its own sampling; ``window`` of :func:`sdit.sharding.draw_set`.

    Called with the number of images the rank will draw, it returns the context that holds the drawing:
    the idle reading first (``idle_s`` > 0 and none yet), then one window of ``meter``. A rank that draws
    nothing opens no window. A meter that cannot read, or fails, does not stop the sampling: its reason
    is kept and :meth:`reading` reports it.

    Args:
        meter: This rank's meter (``None`` with ``reason``: none could be made).
        rank: This rank's index.
        device: The device it samples on.
        idle_s: Seconds of the idle reading before the window (0: none; no above-idle figures).
        reason: Why there is no meter.
    """

    def __init__(self, meter: PowerMeter | None, *, rank: int = 0, device: str = "cpu", idle_s: float = 0.0,
                 reason: str | None = None, name: str = "sampling") -> None:
        self.meter = meter
        self.rank = rank
        self.device = device
        self.idle_s = idle_s
        self.name = name
        self.reason = reason or ("no meter" if meter is None else meter.reason)
        self.description = None if meter is None or not meter.available else meter.description  # read after close
        self.images = 0
        self.measurement: Measurement | None = None

    def __call__(self, images: int) -> AbstractContextManager[None]:
        self.images = images
        return self._window()

    @contextmanager
    def _window(self) -> Iterator[None]:
        meter = self.meter
        if self.images == 0 or self.reason is not None or meter is None:
            yield
            return
        try:
            if self.idle_s > 0 and meter.idle_power_w is None:
                meter.measure_idle_power_w(self.idle_s)
            meter.begin_window(self.name)
        except MeterError as err:
            self.reason = str(err)
            yield
            return
        try:
            yield
        except BaseException:
            try:
                meter.cancel_window(self.name)
            except MeterError:
                pass  # the sampling's own error is the one to see
            raise
        try:
            self.measurement = meter.end_window(self.name)
        except MeterError as err:
            self.reason = f"measurement failed: {err}"

    def reading(self) -> dict[str, Any]:
        """This rank's reading, JSON-ready: rank, host, device, meter, images drawn, and either ``reason``
        or the window's ``time_s``, ``energy_j``, ``idle_power_w``, ``energy_above_idle_j`` and ``method``
        (a rank that drew nothing: 0 J over 0 s, no window)."""
        out: dict[str, Any] = {
            "rank": self.rank, "host": socket.gethostname(), "device": self.device,
            "meter": self.description,
            "images": self.images,
        }
        if self.reason is not None:
            return {**out, "reason": self.reason}
        m = self.measurement
        if m is None:  # drew nothing
            return {**out, "method": None, "time_s": 0.0, "energy_j": 0.0, "idle_power_w": None,
                    "energy_above_idle_j": 0.0}
        return {**out, "method": m.method, "time_s": m.time_s, "energy_j": m.energy_j,
                "idle_power_w": m.idle_power_w, "energy_above_idle_j": m.energy_above_idle_j}


def combine_rank_readings(readings: list[dict[str, Any]], meter_kind: str, num_images: int) -> dict[str, Any]:
    """The measured block of a run whose ranks read ``readings`` (:meth:`RankWindow.reading`, in rank order).

    The sum and the energy per image are reported only when every rank read and no two ranks that drew
    images read the same meter (same host, same meter description: the CPU packages' RAPL counter of one
    host, or one GPU): their windows overlap, so each reading holds the others' work and the sum would
    count it more than once. Otherwise ``available`` is false and ``reason`` names the ranks and why; the
    per-rank readings stay. Reused images (``num_images`` less those drawn) are not in the per-image figure.
    """
    sampled = sum(r["images"] for r in readings)
    out: dict[str, Any] = {
        "available": False, "reason": None, "meter_kind": meter_kind, "window": RANK_WINDOW,
        "units": {"energy": "J", "time": "s", "power": "W", "per_image": "J per image sampled in the windows"},
        "meters": list(dict.fromkeys(r["meter"] for r in readings if r["meter"])),
        "processes": len(readings), "images_sampled": sampled, "images_reused": num_images - sampled,
        "ranks": readings,
    }
    failed = [r for r in readings if r.get("reason") is not None]
    shared: dict[tuple[str, str], list[int]] = {}
    for r in readings:
        if r.get("reason") is None and r["images"] > 0:
            shared.setdefault((r["host"], r["meter"]), []).append(r["rank"])
    overlap = {key: ranks for key, ranks in shared.items() if len(ranks) > 1}
    if failed:
        out["reason"] = "; ".join(f"rank {r['rank']}: {r['reason']}" for r in failed)
    elif overlap:
        (host, meter), ranks = next(iter(overlap.items()))
        out["reason"] = (f"ranks {', '.join(map(str, ranks))} read one meter on host {host} ({meter}): each "
                         "reading holds the other ranks' work, so their sum would count it more than once; "
                         "measure with one process per host (CPU) or per GPU")
    elif sampled == 0:
        out["reason"] = "nothing was sampled: every batch was taken from --shards"
    if out["reason"] is not None:
        return out
    energy_j = sum(r["energy_j"] for r in readings)
    above = [r["energy_above_idle_j"] for r in readings if r["images"] > 0]
    above_j = None if any(a is None for a in above) else sum(r["energy_above_idle_j"] for r in readings)
    return {
        **out, "available": True, "energy_j": energy_j, "energy_above_idle_j": above_j,
        "energy_j_per_image": energy_j / sampled,
        "energy_above_idle_j_per_image": None if above_j is None else above_j / sampled,
        "rank_seconds": sum(r["time_s"] for r in readings),
        "longest_window_s": max(r["time_s"] for r in readings),
    }


def gather_rank_measurements(ctx: distributed.DistContext, window: RankWindow, meter_kind: str,
                             num_images: int) -> dict[str, Any] | None:
    """Every rank's reading of ``window`` gathered (the run's process group) and combined on rank 0
    (:func:`combine_rank_readings`); ``None`` on the other ranks. Every rank must call it."""
    readings = distributed.all_gather_objects(ctx, window.reading())
    return combine_rank_readings(readings, meter_kind, num_images) if ctx.is_main else None


def _idle_power_w(meter: PowerMeter, idle_s: float) -> float:
    """The meter's idle reading, measured now if it has none."""
    idle_w = meter.idle_power_w
    return meter.measure_idle_power_w(idle_s) if idle_w is None else idle_w


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    if param is None:
        raise ValueError(f"{type(model).__name__} has no parameters to say which device it is on")
    return param.device


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
