"""The public Python API: profile any PyTorch model (or a preset / checkpoint), then estimate its energy.

::

    import sdit                                   # or: from profiling import profile, estimate
    p = sdit.profile(model, x)                    # any nn.Module and an example input: one forward
    p = sdit.profile("sdit-small", workload=Workload.ddim(50))   # a preset or a checkpoint path
    p.layers_frame()                              # per layer, per image (pandas)
    e = sdit.estimate(p, costs="45nm-fp32", convention="spikformer")
    e.total_j, e.per_image, e.layers

Spiking neurons are recognised by declaration (:mod:`profiling.neurons`): spikingjelly's ``LIFNode``,
``IFNode``, ``ParametricLIFNode``, snnTorch's neurons (``snn.Leaky`` ..., spikes at output 0) and Norse's
cells and sequence modules (``LIFCell`` ..., ``(z, state)``) are built in; other classes are declared
with ``neuron_types=``. An undeclared spikingjelly neuron, or a module of an undeclared class that emits
binary tensors, raises :class:`~profiling.counter.UnknownNeuronError`. Multi-step neurons (spikingjelly's
``step_mode="m"``, T the first axis) and single-step ones (the model calls each neuron once per time
step) are both counted. Ops no rule covers are listed in ``Profile.unsupported_ops``.

This module imports torch on first use of :func:`profile` only; :func:`estimate` stays torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from profiling.energy import DEFAULT_COSTS, EnergyCosts, Estimate, load_costs, with_memory
from profiling.energy import estimate as _estimate
from profiling.records import Profile
from sdit.workload import Workload

if TYPE_CHECKING:
    from torch import nn

__all__ = ["estimate", "profile"]


def profile(
    target: Any,
    example: Any = None,
    /,
    *,
    workload: Workload | None = None,
    name: str | None = None,
    strict: bool = False,
    neuron_types: Any = (),
    reset: bool = True,
    reuse: bool = True,
    batch_size: int | None = None,
    time_axis: int | str | None = "auto",
    spike_detection: str = "rules",
    device: str | None = None,
) -> Profile:
    """Count MACs, ACs, spikes and the other op columns per layer of a model, per image.

    Two ways in:

    - ``profile(model, x)``: any ``nn.Module`` and an example input, counted over one forward
      ``model(x)``. ``x`` is a tensor, a tuple of positional inputs, or a dict of keyword inputs;
      its first axis is the batch (for multi-step spikingjelly models, whose input is (T, B, ...),
      the second), checked against the batch axis of the neurons' spike trains; where they disagree the
      assumption is printed (state it with ``batch_size=`` or ``time_axis=``). Counts are per image:
      totals divided by the batch size.
    - ``profile(target, workload=...)``: ``target`` a preset name (untrained weights), a checkpoint
      path, or one of this project's models (SDiT / DiT); ``workload`` one forward at a timestep
      (default ``Workload.forward()``: t = 500 on N(0, I) noise) or a whole DDIM / DDPM sampling run.

    Args:
        target: A module, a preset name or a checkpoint path.
        example: The example input of an arbitrary module (leave out for presets and checkpoints).
        workload: What a preset, checkpoint or project model runs; not with ``example``.
        name: Recorded as ``Profile.model`` (default: the preset / path, or the module's class name).
        strict: Raise on the first op no counting rule covers instead of listing it.
        neuron_types: Neuron classes beside the built-in declarations: classes (spikes: the output, or
            output 0 of a tuple) or a mapping class -> :class:`profiling.neurons.NeuronSpec` (which output
            is the spike train, its time axis, the update cost; ``spiking=False`` for analog outputs).
        reset: Reset spikingjelly neuron states before and after the forward of an arbitrary
            module (``functional.reset_net``), so the counts are of a fresh sample.
        reuse: Reuse the counts of modules called again with the same input shapes, spiking blocks
            too while their neurons count every call (fast, same counts; see :mod:`profiling.counter`);
            ``False`` counts every call op by op.
        batch_size: Images in an example input (default: its first axis; the second, B of (T, B, ...),
            when the model's spikingjelly modules run multi-step; see ``time_axis``).
        time_axis: The axis of T in an example input (the batch is then the first other axis); ``None``
            when the input has no time axis (a model that repeats its input T times); ``"auto"`` infers.
        spike_detection: ``"rules"`` (spikes by provenance, no device synchronisation per op) or ``"verify"``:
            also check by value that every tensor the rules call spikes is binary and that every binary
            operand of a synaptic op was called spikes; raises
            :class:`~profiling.spikes.SpikeDetectionError` listing what it found.
        device: Where a preset or checkpoint is loaded (default ``cpu``); a module stays where it is.

    Returns:
        The :class:`~profiling.records.Profile`: ``per_image`` totals, ``layers`` in execution order,
        ``steps`` and ``layer_steps`` per model call, and the DataFrame accessors ``layers_frame()``
        (alias ``to_dataframe()``), ``steps_frame()`` and ``layer_steps_frame()``;
        :func:`profiling.energy.energy_frame` gives its energy per layer.

    Raises:
        TypeError: ``target`` is not a module, preset or path; or an example is missing / not usable.
        ValueError: ``workload`` together with ``example``.
        profiling.counter.UnknownNeuronError: a spikingjelly neuron without a declaration, or a module of an
            undeclared class that emits binary tensors (the message names ``neuron_types=``).
        ValueError: a ``time_axis`` that is not an axis of the example input.
        sdit.targets.TargetError, sdit.checkpoint.CheckpointError: a target that cannot be loaded.
    """
    import torch
    from torch import nn

    from profiling.workloads import profile_module, profile_workload

    if isinstance(target, str):
        if example is not None:
            raise TypeError("a preset or checkpoint runs its own inputs: pass workload=..., not an example input")
        from sdit.targets import load_target

        loaded = load_target(target, device=device or "cpu")
        return profile_workload(loaded.model, workload or Workload.forward(), name=name or target, strict=strict,
                                device=device or "cpu", reuse=reuse)
    if not isinstance(target, nn.Module):
        raise TypeError(f"profile() takes an nn.Module, a preset name or a checkpoint path, "
                        f"got {type(target).__name__}")
    if example is None:
        if not _is_project_model(target):
            raise TypeError(f"{type(target).__name__} is not an sdit model: pass an example input, "
                            "profile(model, x)")
        where = device or str(next(target.parameters()).device)
        return profile_workload(target, workload or Workload.forward(), name=name or type(target).__name__,
                                strict=strict, device=where, reuse=reuse)
    if workload is not None:
        raise ValueError("an example input is one forward of the module; a workload is for presets, "
                         "checkpoints and sdit models (leave one of them out)")
    args, kwargs = _as_call(example, torch)
    return profile_module(target, args, kwargs, name=name or type(target).__name__, strict=strict,
                          neuron_types=neuron_types, reset=reset, reuse=reuse, batch_size=batch_size,
                          time_axis=time_axis, spike_detection=spike_detection)


def estimate(
    profile: Profile,
    costs: str | EnergyCosts = DEFAULT_COSTS,
    convention: str = "strict",
    *,
    memory: str | None = None,
) -> Estimate:
    """Energy per image, per layer and per model call of ``profile`` (joules) under a cost preset and a convention.

    Args:
        profile: From :func:`profile` (or ``Profile.from_json``).
        costs: A preset name of :data:`profiling.energy.COST_PRESETS` (e.g. ``45nm-fp32``, ``loihi``),
            a TOML file of constants, or an :class:`~profiling.energy.EnergyCosts`.
        convention: A counting convention of :data:`profiling.conventions.COUNTING_CONVENTIONS`:
            ``strict``, ``paper``, ``block`` or ``spikformer``.
        memory: A memory model and preset, ``MODEL[:PRESET]`` (``none``, ``operand-once``, ``no-reuse``,
            ``lemaire``; a bare preset of :data:`profiling.memory.MEMORY_PRESETS` is ``operand-once`` at it;
            docs/memory.md); off by default.

    Returns:
        The :class:`~profiling.energy.Estimate` (``total_j``, ``per_image``, ``per_step``, ``layers``,
        ``counts``, ``undefined``, ``sweep(rates)``; :func:`profiling.energy.break_even_rate` against a baseline).

    Raises:
        profiling.energy.CostsError: unknown preset, bad file, or a term added to an all-in figure.
        profiling.conventions.ConventionError: unknown convention.
    """
    constants = costs if isinstance(costs, EnergyCosts) else load_costs(costs)
    return _estimate(profile, with_memory(constants, memory), convention)


def _is_project_model(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    return getattr(config, "kind", None) in ("sdit", "dit") and hasattr(config, "image_size")


def _as_call(example: Any, torch: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The positional and keyword inputs of ``model(...)`` from an example input."""
    if isinstance(example, torch.Tensor):
        return (example,), {}
    if isinstance(example, tuple | list):
        return tuple(example), {}
    if isinstance(example, Mapping):
        return (), dict(example)
    raise TypeError(f"the example input must be a tensor, a tuple of inputs or a dict of keyword inputs, "
                    f"got {type(example).__name__}")
