"""Spiking neurons of any framework through one declared protocol (:class:`NeuronSpec`).

A neuron is a module whose call the counter (:mod:`profiling.counter`) counts whole: its spike train is
marked as spikes (what synaptic ops it feeds cost ACs), its spikes are counted per spiking step and its
membrane updates go to ``neuron_updates``. A declaration says, for one class:

- which output is the spike train (``spike_output``: an index into a tuple output such as snnTorch's
  ``(spk, mem)`` or Norse's ``(z, state)``; a tensor output is the spike train itself);
- which axis of the spike train is time (``time_axis``: an axis for a multi-step neuron, ``None`` for a
  neuron called once per step, ``"step_mode"`` for spikingjelly's ``step_mode`` attribute,
  ``"batch_time"`` for batch and time flattened into axis 0, as sinabs's ``Squeeze`` layers do);
- its update cost (``updates_per_element``: membrane updates per spike-train element);
- whether it spikes at all (``spiking=False``: an analog-output neuron, counted op by op like any module);
- what its spike train holds (``output``): 0/1 spikes, or counts of spikes per step (0, 1, 2, ...: a
  multi-spike neuron), which are counts of spikes to the counter (strict counting charges the synaptic ops
  they feed as MACs, as for any real value) and whose spikes are their sum.

Built-in declarations (:data:`BUILTIN_NEURONS`) match a class by the name and module of a class in its
MRO, so snnTorch, Norse and sinabs need not be imported; ``neuron_types=`` adds the user's (a class, or a
class mapped to its :class:`NeuronSpec`), checked first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from profiling.spikes import BINARY, COUNTS

STEP_MODE = "step_mode"
BATCH_TIME = "batch_time"  # axis 0 is batch x time flattened, split by the module's batch_size / num_timesteps


@dataclass(frozen=True)
class NeuronSpec:
    """How to read one neuron class (see the module docstring).

    Attributes:
        spike_output: Index of the spike train in a tuple / list output (a tensor output is the spike train).
        time_axis: Axis of T in the spike train; ``None``: one spiking step per call; ``"step_mode"``:
            axis 0 when the module's ``step_mode`` is ``"m"`` (spikingjelly), else one step per call;
            ``"batch_time"``: axis 0 holds batch x time flattened (B x T, ...), split into (B, T, ...) by the
            module's ``batch_size`` or ``num_timesteps`` attribute (one of them may be -1: inferred).
        updates_per_element: Membrane updates per element of the spike train (the update cost).
        spiking: ``False`` for an analog-output neuron: not counted as spiking, its ops counted one by one.
        framework: Where the declaration comes from (for messages and docs).
        output: ``"spikes"`` (0/1) or ``"counts"`` (spikes per neuron per step, 0, 1, 2, ...), or a function
            of the module giving one of the two (sinabs: by its ``spike_fn``).
        hidden_synapses: Synaptic ops the neuron runs inside its own call (a recurrent cell's weights), which
            the counter would not see: a built-in declaration with them is refused, with the fix.
    """

    spike_output: int = 0
    time_axis: int | str | None = STEP_MODE
    updates_per_element: int = 1
    spiking: bool = True
    framework: str = "user"
    output: str | Callable[[nn.Module], str] = BINARY
    hidden_synapses: str | None = None

    def spike_train(self, out: Any) -> Tensor | None:
        """The spike train in a call's output, or ``None`` if the output has none where declared."""
        if isinstance(out, Tensor):
            return out
        if isinstance(out, list | tuple) and len(out) > self.spike_output:
            train = out[self.spike_output]
            return train if isinstance(train, Tensor) else None
        return None

    def time_axis_of(self, module: nn.Module, train: Tensor) -> int | None:
        """The time axis of ``train`` produced by ``module`` (``None``: one spiking step); for ``"batch_time"``
        the axis of T in :meth:`steps_of`'s view (1)."""
        axis = self.time_axis
        if axis == STEP_MODE:
            return 0 if getattr(module, "step_mode", "s") == "m" and train.dim() >= 2 else None
        if axis == BATCH_TIME:
            return 1
        if axis is None:
            return None
        return int(axis) % train.dim()

    def steps_of(self, module: nn.Module, train: Tensor) -> tuple[Tensor, int | None]:
        """``train`` with a time axis of its own (a view; batch x time split for ``"batch_time"``), and that axis.

        Raises:
            ValueError: a ``"batch_time"`` module without a ``batch_size`` / ``num_timesteps`` that splits axis 0.
        """
        if self.time_axis != BATCH_TIME:
            return train, self.time_axis_of(module, train)
        batch, steps = int(getattr(module, "batch_size", -1) or -1), int(getattr(module, "num_timesteps", -1) or -1)
        flat = train.shape[0] if train.dim() else 0
        known = batch if batch > 0 else steps
        if known <= 0 or flat % known or (batch > 0 and steps > 0 and batch * steps != flat):
            raise ValueError(f"{type(module).__name__}: cannot split its output's axis 0 ({flat}) into batch x time "
                             f"with batch_size={batch}, num_timesteps={steps}; set the one that divides it")
        return train.reshape(batch, steps, *train.shape[1:]), 1

    def output_of(self, module: nn.Module) -> str:
        """What ``module``'s spike train holds: :data:`~profiling.spikes.BINARY` or
        :data:`~profiling.spikes.COUNTS`."""
        kind = self.output(module) if callable(self.output) else self.output
        if kind not in (BINARY, COUNTS):
            raise ValueError(f"NeuronSpec.output of {type(module).__name__} is {kind!r}: "
                             f"{BINARY!r} or {COUNTS!r}")
        return kind


def counted_spikes_per_step(train: Tensor, time_axis: int | None) -> Tensor:
    """Spikes per spiking step of a multi-spike neuron, whose ``train`` holds counts (0, 1, 2, ... spikes
    per neuron per step): their sum per step, a (steps,) tensor on ``train``'s device (exact: a float64 sum
    of integers below 2^53; no synchronisation)."""
    flat = train.reshape(1, -1) if time_axis is None else train.movedim(time_axis, 0).reshape(
        train.shape[time_axis], -1)
    return flat.sum(dim=1, dtype=torch.float64)


def _sinabs_output(module: nn.Module) -> str:
    """sinabs's ``spike_fn``: ``SingleSpike`` (or ``MaxSpike(1)``) fires 0/1; ``MultiSpike`` (the default of
    IAF and LIF), ``MaxSpike(n > 1)`` and any other function fire counts."""
    fn = getattr(module, "spike_fn", None)
    classes = fn.__mro__ if isinstance(fn, type) else type(fn).__mro__
    if any(c.__name__ == "SingleSpike" and c.__module__.startswith("sinabs.") for c in classes):
        return BINARY
    if type(fn).__name__ == "MaxSpike" and getattr(fn, "max_num_spikes_per_bin", None) == 1:
        return BINARY
    return COUNTS


@dataclass(frozen=True)
class Declaration:
    """A built-in declaration: classes named ``names`` defined under module ``package``, anywhere in an MRO."""

    package: str
    names: tuple[str, ...]
    spec: NeuronSpec


_SJ = "spikingjelly.activation_based.neuron"
_SINABS = "sinabs.layers"
_NORSE_RECURRENT = ("its input and recurrent weights (input_weights, recurrent_weights) multiply inside the cell; "
                    "use the non-recurrent cell (LIFCell, LIF) with the weights as nn.Linear layers around it")
_SNNTORCH_RECURRENT = ("its recurrent weights (the recurrent submodule) multiply inside the neuron; use Leaky / "
                       "Synaptic with the recurrence as an nn.Linear fed by its spikes")
_SINABS_RECURRENT = ("its recurrent connection (rec_connect) runs inside the layer; use the non-recurrent layer with "
                     "the connection as an nn.Linear / nn.Conv2d fed by its spikes")
BUILTIN_NEURONS: tuple[Declaration, ...] = (
    # spikingjelly: LIAF fires an analog activation of the membrane, never spikes (a subclass of LIFNode: first)
    Declaration(_SJ, ("LIAFNode",), NeuronSpec(spiking=False, framework="spikingjelly")),
    Declaration(_SJ, ("LIFNode", "IFNode", "ParametricLIFNode"), NeuronSpec(framework="spikingjelly")),
    # snnTorch: every neuron derives from SpikingNeuron and returns spk, or (spk, mem) / (spk, syn, mem)
    Declaration("snntorch", ("RLeaky", "RSynaptic"), NeuronSpec(spike_output=0, time_axis=None, framework="snnTorch",
                                                             hidden_synapses=_SNNTORCH_RECURRENT)),
    Declaration("snntorch", ("SpikingNeuron",), NeuronSpec(spike_output=0, time_axis=None, framework="snnTorch")),
    # Norse: leaky integrators are analog; cells (one step per call) and their sequence forms (T first)
    # return (z, state)
    Declaration("norse", ("LICell", "LI", "LIBoxCell", "LIBox"),
                NeuronSpec(spiking=False, framework="Norse")),
    Declaration("norse", ("SNNRecurrentCell",), NeuronSpec(spike_output=0, time_axis=None, framework="Norse",
                                                           hidden_synapses=_NORSE_RECURRENT)),
    Declaration("norse", ("SNNRecurrent",), NeuronSpec(spike_output=0, time_axis=0, framework="Norse",
                                                       hidden_synapses=_NORSE_RECURRENT)),
    Declaration("norse", ("SNNCell",), NeuronSpec(spike_output=0, time_axis=None, framework="Norse")),
    Declaration("norse", ("SNN",), NeuronSpec(spike_output=0, time_axis=0, framework="Norse")),
    # sinabs: ExpLeak (a subclass of LIF: first) is a leaky integrator; the layers take (B, T, ...), their
    # Squeeze forms (B x T, ...); spikes or counts by spike_fn
    Declaration(_SINABS, ("ExpLeak",), NeuronSpec(spiking=False, framework="sinabs")),
    Declaration(_SINABS, ("IAFRecurrent", "LIFRecurrent", "ALIFRecurrent"),
                NeuronSpec(time_axis=1, output=_sinabs_output, framework="sinabs", hidden_synapses=_SINABS_RECURRENT)),
    Declaration(_SINABS, ("IAFSqueeze", "LIFSqueeze", "ALIFSqueeze"),
                NeuronSpec(time_axis=BATCH_TIME, output=_sinabs_output, framework="sinabs")),
    Declaration(_SINABS, ("IAF", "LIF", "ALIF"), NeuronSpec(time_axis=1, output=_sinabs_output, framework="sinabs")),
)


def _declared(cls: type, declarations: Iterable[Declaration]) -> NeuronSpec | None:
    for klass in cls.__mro__:
        module = getattr(klass, "__module__", "") or ""
        for d in declarations:
            if klass.__name__ in d.names and (module == d.package or module.startswith(d.package + ".")):
                return d.spec
    return None


NeuronTypes = Iterable[type] | Mapping[type, NeuronSpec]


class NeuronTable:
    """Which modules are neurons and how to read them: the user's ``neuron_types`` first, then the built-ins.

    Args:
        user: Classes (read with the default :class:`NeuronSpec`) or a mapping class -> spec.
    """

    def __init__(self, user: NeuronTypes = ()) -> None:
        if isinstance(user, Mapping):
            pairs = list(user.items())
        else:
            pairs = [(cls, NeuronSpec()) for cls in user]
        for cls, spec in pairs:
            if not isinstance(cls, type) or not isinstance(spec, NeuronSpec):
                raise TypeError(f"neuron_types= takes module classes or a mapping class -> NeuronSpec, "
                                f"got {cls!r}: {spec!r}")
        self.user = tuple(pairs)
        self._cache: dict[type, NeuronSpec | None] = {}

    def spec_of(self, module: nn.Module) -> NeuronSpec | None:
        """The declaration of ``module``'s class, or ``None`` (not a declared neuron)."""
        cls = type(module)
        if cls not in self._cache:
            spec = next((s for c, s in self.user if issubclass(cls, c)), None)
            self._cache[cls] = spec if spec is not None else _declared(cls, BUILTIN_NEURONS)
        return self._cache[cls]

    def user_declared(self, module: nn.Module) -> bool:
        """``module``'s class is declared by the caller (``neuron_types=``), not built in."""
        return any(issubclass(type(module), c) for c, _ in self.user)

    def is_neuron(self, module: nn.Module) -> bool:
        """A declared spiking neuron (analog neurons are not)."""
        spec = self.spec_of(module)
        return spec is not None and spec.spiking

    def names(self) -> str:
        """The declared classes, for messages."""
        users = [c.__name__ for c, _ in self.user]
        builtins = [f"{d.spec.framework} {n}" for d in BUILTIN_NEURONS if d.spec.spiking for n in d.names]
        return ", ".join(users + builtins)


# ---- the batch size of an example input --------------------------------------------------------------

AUTO = "auto"


def batch_size_of(example: Tensor, *, time_axis: int | str | None, multi_step: bool,
                  first_train: tuple[tuple[int, ...], int | None] | None) -> tuple[int, str | None]:
    """Images in ``example`` (the first tensor of a model's input), and the assumption made, if any, to print.

    ``time_axis``: the axis of T in ``example`` (the batch is then the first other axis), ``None`` (no time
    axis: the batch is axis 0) or ``"auto"``: axis 0, or axis 1 for a model whose spikingjelly modules run
    multi-step ((T, B, ...)), checked against the neurons' batch axis (``first_train``: the first spike
    train's shape and time axis). Where the two disagree, the neurons' batch is taken: silently if it is
    the example's axis 0 (a model that repeats a (B, ...) input T times), with the assumption said if it is
    axis 1 (time first), also silently if the example's axis 0 is the neurons' batch x time flattened (a net of
    sinabs's Squeeze layers); if the example has it on none, the first guess is kept, and said.

    Raises:
        ValueError: ``example`` has no axis to read a batch from, or ``time_axis`` is not one of its axes.
    """
    if example.dim() == 0:
        raise ValueError("cannot tell the batch size: the example input holds no batched tensor (pass batch_size=)")
    shape = tuple(example.shape)
    if time_axis is None:
        return shape[0], None
    if time_axis != AUTO:
        if not isinstance(time_axis, int) or not -example.dim() <= time_axis < example.dim() or example.dim() < 2:
            raise ValueError(f"time_axis={time_axis!r} is not an axis of the example input {shape} with a batch "
                             "axis beside it")
        return shape[1 if time_axis % example.dim() == 0 else 0], None
    axis = 1 if multi_step and example.dim() >= 2 else 0
    guess = shape[axis]
    if first_train is None:
        return guess, None
    train_shape, train_time = first_train
    batch_axis = 1 if train_time == 0 else 0
    if len(train_shape) <= batch_axis:
        return guess, None
    seen = train_shape[batch_axis]
    if seen == guess:
        return guess, None
    if shape[0] == seen:  # batch first, as the neurons confirm: a model that repeats its input T times
        return seen, None
    if train_time is not None and shape[0] == seen * train_shape[train_time]:
        return seen, None  # batch x time flattened in axis 0, as the neurons split it (sinabs's Squeeze layers)
    hint = "pass batch_size= or time_axis= to state it"
    if example.dim() >= 2 and shape[1] == seen:
        return seen, (f"batch size {seen}: axis 1 of the example input {shape} (axis 0 taken for time), as the "
                      f"neurons' spike trains {train_shape} show ({hint})")
    return guess, (f"batch size {guess}: axis {axis} of the example input {shape}; the neurons' spike trains "
                   f"{train_shape} do not show it ({hint})")
