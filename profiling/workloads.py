"""Profiling a :class:`~sdit.workload.Workload` (one forward at a timestep, or a whole sampling run),
and one forward of any module on an example input (:func:`profile_module`).

A profiled workload runs through :func:`sdit.diffusion.run_steps`, as sampling and measuring do, so
a profile and a measurement of one workload see the same inputs.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from profiling.counter import LayerCounter
from profiling.neurons import AUTO, NeuronTypes, batch_size_of
from profiling.profile import build_profile
from profiling.records import Profile
from sdit.diffusion import run_steps
from sdit.workload import Workload


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """Move the objects alive now (torch, the model) out of the garbage collector's view while counting.

    Counting allocates many small containers, which now and then triggers a full collection that
    scans the whole heap (~0.2 s with torch loaded, as long as a DiT-small sampling run). Frozen
    objects are skipped by collections; new garbage is still collected. Left alone if the caller
    froze objects itself.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _time_steps(model: nn.Module) -> int:
    return int(getattr(model.config, "time_steps", 0))


def _build(counter: LayerCounter, model: nn.Module, name: str, workload: Workload) -> Profile:
    steps, unsupported = counter.finish()
    return build_profile(
        steps, unsupported, model=name, kind=model.config.kind, workload=workload,
        batch_size=workload.batch_size, time_steps=_time_steps(model), in_spiking_block=counter.in_spiking_block,
        blocks=counter.blocks, precisions=counter.precisions,
    )


@torch.no_grad()
def profile_forward(
    model: nn.Module,
    *,
    name: str,
    batch_size: int = 1,
    timestep: int = 500,
    seed: int = 0,
    strict: bool = False,
    images: Tensor | None = None,
    device: torch.device | str = "cpu",
    reuse: bool = True,
) -> Profile:
    """Count one forward of ``model`` at diffusion timestep ``timestep``.

    Args:
        name: Preset name or checkpoint path, recorded in the profile.
        images: (B, C, H, W) inputs x_t; by default the workload's: N(0, I) noise from ``seed``
            (what the sampler feeds the model at its first step).
        reuse: See :class:`~profiling.counter.LayerCounter`.
    """
    if images is None:
        workload = Workload.forward(timestep, batch_size=batch_size, seed=seed)
        return profile_workload(model, workload, name=name, strict=strict, device=device, reuse=reuse)
    workload = Workload.forward(timestep, batch_size=images.shape[0], seed=seed)
    t = torch.full((images.shape[0],), timestep, dtype=torch.long, device=images.device)
    model.eval()
    with _frozen_heap():
        with LayerCounter(model, strict=strict, reuse=reuse) as counter:
            with counter.step(t=timestep):
                model(images, t)
        return _build(counter, model, name, workload)


@torch.no_grad()
def profile_sampling(
    model: nn.Module,
    *,
    name: str,
    method: str = "ddim",
    sample_steps: int = 50,
    batch_size: int = 1,
    seed: int = 0,
    eta: float = 0.0,
    strict: bool = False,
    device: torch.device | str = "cpu",
    reuse: bool = True,
) -> Profile:
    """Count a whole sampling run: ``method`` ``ddim`` (``sample_steps`` steps, noise scale ``eta``),
    ``ddpm`` (all steps) or ``ddpm-respaced`` (``sample_steps`` steps); see :func:`profile_workload`."""
    workload = Workload(method, steps=None if method == "ddpm" else sample_steps, eta=eta, batch_size=batch_size,
                        seed=seed)
    return profile_workload(model, workload, name=name, strict=strict, device=device, reuse=reuse)


@torch.no_grad()
def profile_workload(
    model: nn.Module,
    workload: Workload,
    *,
    name: str,
    strict: bool = False,
    device: torch.device | str = "cpu",
    reuse: bool = True,
) -> Profile:
    """Count ``workload`` on ``model``: every model call is one step of the profile.

    A step's window opens at the model call (a pre-hook on ``model``) and spans the sampler update that
    follows it, which is attributed to the pseudo-layer "(outside model)"; drawing the noise and the
    labels of a class-conditional model is outside every window.

    With ``reuse`` (the default) a DiT, and an SDiT whose blocks read no spikes, is counted op by op at
    its first call only and its counts reused at every later step, the SDiT's neurons counted at every
    step (see :class:`~profiling.counter.LayerCounter`); the spike-driven SDiT's blocks stay op by op.
    """
    model.eval()
    steps = run_steps(model, workload, device=device)  # the noise and labels drawn here, outside the counter
    with _frozen_heap():
        with LayerCounter(model, strict=strict, reuse=reuse) as counter:
            def opened(_module: nn.Module, args: tuple[Any, ...]) -> None:
                counter.begin_step(t=int(args[1][0]))  # args: (x_t, t) or (x_t, t, y)

            handle = model.register_forward_pre_hook(opened, prepend=True)
            try:
                for _ in steps:
                    counter.end_step()
            finally:
                handle.remove()
        return _build(counter, model, name, workload)


@torch.no_grad()
def profile_module(
    model: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any] | None = None,
    *,
    name: str,
    strict: bool = False,
    neuron_types: NeuronTypes = (),
    reset: bool = True,
    reuse: bool = True,
    batch_size: int | None = None,
    time_axis: int | str | None = AUTO,
    spike_detection: str = "rules",
) -> Profile:
    """Count one forward ``model(*args, **kwargs)`` of any module, per image.

    The model runs in eval mode (each module's mode is restored afterwards) and without gradients;
    with ``reset`` its spikingjelly neuron states are reset before and after. The profile's kind is
    ``snn`` (the model has spiking neurons) or ``ann``; ``time_steps`` is the most spiking steps any
    neuron layer ran (T of a multi-step neuron's (T, B, ...) input, or the calls of a single-step one);
    its workload is one forward of ``batch_size`` images (the timestep of :class:`Workload` does not apply).

    Args:
        batch_size: Images in the input; by default :func:`profiling.neurons.batch_size_of` of its first
            tensor and ``time_axis`` (an assumption it makes is printed to stderr).
        time_axis: The axis of T in the input, ``None`` for none, ``"auto"`` to infer.
        spike_detection: ``"rules"`` or ``"verify"`` (see :class:`~profiling.counter.LayerCounter`).
    """
    from spikingjelly.activation_based import functional

    kwargs = kwargs or {}
    first = next((v for v in (*args, *kwargs.values()) if isinstance(v, Tensor)), None)
    if batch_size is None and (first is None or first.dim() == 0):
        raise TypeError("cannot tell the batch size: the example input holds no batched tensor (pass batch_size=)")
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    if reset:
        functional.reset_net(model)
    try:
        with _frozen_heap(), LayerCounter(model, strict=strict, neuron_types=neuron_types, reuse=reuse,
                                                 spike_detection=spike_detection) as counter:
            with counter.step(index=0):
                model(*args, **kwargs)
    finally:
        for module, training in modes:
            module.training = training
        if reset:
            functional.reset_net(model)
    steps, unsupported = counter.finish()
    batch = batch_size
    if batch is None:
        multi = any(getattr(m, "step_mode", None) == "m" for m in model.modules())
        batch, assumed = batch_size_of(first, time_axis=time_axis, multi_step=multi, first_train=counter.first_train)
        if assumed:
            print(f"profile: {assumed}", file=sys.stderr)
    time_steps = max((rec["steps"] for _, layers in steps for rec in layers.values() if rec["neuron_updates"]),
                     default=0)
    return build_profile(
        steps, unsupported, model=name, kind="snn" if counter.has_neurons else "ann",
        workload=Workload.forward(batch_size=batch), batch_size=batch, time_steps=time_steps,
        in_spiking_block=counter.in_spiking_block, blocks=counter.blocks, precisions=counter.precisions,
    )
