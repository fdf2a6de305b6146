"""Spiking neurons of any framework through one declared protocol (:class:`NeuronSpec`).

A neuron is a module whose call the counter (:mod:`profiling.counter`) counts whole: its spike train is
marked as spikes (what synaptic ops it feeds cost ACs), its spikes are counted per spiking step and its
membrane updates go to ``neuron_updates``. A declaration says, for one class:

- which output is the spike train (``spike_output``: an index into a tuple output such as snnTorch's
  ``(spk, mem)`` or Norse's ``(z, state)``; a tensor output is the spike train itself);
- which axis of the spike train is time (``time_axis``: an axis for a multi-step neuron, ``None`` for a
  neuron called once per step, ``"step_mode"`` for spikingjelly's ``step_mode`` attribute);
- its update cost (``updates_per_element``: membrane updates per spike-train element);
- whether it spikes at all (``spiking=False``: an analog-output neuron, counted op by op like any module).

Built-in declarations (:data:`BUILTIN_NEURONS`) match a class by the name and module of a class in its
MRO, so snnTorch and Norse need not be imported; ``neuron_types=`` adds the user's (a class, or a class
mapped to its :class:`NeuronSpec`), checked first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

STEP_MODE = "step_mode"


@dataclass(frozen=True)
class NeuronSpec:
    """How to read one neuron class (see the module docstring).

    Attributes:
        spike_output: Index of the spike train in a tuple / list output (a tensor output is the spike train).
        time_axis: Axis of T in the spike train; ``None``: one spiking step per call; ``"step_mode"``:
            axis 0 when the module's ``step_mode`` is ``"m"`` (spikingjelly), else one step per call.
        updates_per_element: Membrane updates per element of the spike train (the update cost).
        spiking: ``False`` for an analog-output neuron: not counted as spiking, its ops counted one by one.
        framework: Where the declaration comes from (for messages and docs).
    """

    spike_output: int = 0
    time_axis: int | str | None = STEP_MODE
    updates_per_element: int = 1
    spiking: bool = True
    framework: str = "user"

    def spike_train(self, out: Any) -> Tensor | None:
        """The spike train in a call's output, or ``None`` if the output has none where declared."""
        if isinstance(out, Tensor):
            return out
        if isinstance(out, list | tuple) and len(out) > self.spike_output:
            train = out[self.spike_output]
            return train if isinstance(train, Tensor) else None
        return None

    def time_axis_of(self, module: nn.Module, train: Tensor) -> int | None:
        """The time axis of ``train`` produced by ``module`` (``None``: one spiking step)."""
        axis = self.time_axis
        if axis == STEP_MODE:
            return 0 if getattr(module, "step_mode", "s") == "m" and train.dim() >= 2 else None
        if axis is None:
            return None
        return int(axis) % train.dim()


@dataclass(frozen=True)
class Declaration:
    """A built-in declaration: classes named ``names`` defined under module ``package``, anywhere in an MRO."""

    package: str
    names: tuple[str, ...]
    spec: NeuronSpec


_SJ = "spikingjelly.activation_based.neuron"
BUILTIN_NEURONS: tuple[Declaration, ...] = (
    # spikingjelly: LIAF fires an analog activation of the membrane, never spikes (a subclass of LIFNode: first)
    Declaration(_SJ, ("LIAFNode",), NeuronSpec(spiking=False, framework="spikingjelly")),
    Declaration(_SJ, ("LIFNode", "IFNode", "ParametricLIFNode"), NeuronSpec(framework="spikingjelly")),
    # snnTorch: every neuron derives from SpikingNeuron and returns spk, or (spk, mem) / (spk, syn, mem)
    Declaration("snntorch", ("SpikingNeuron",), NeuronSpec(spike_output=0, time_axis=None, framework="snnTorch")),
    # Norse: leaky integrators are analog; cells (one step per call) and their sequence forms (T first)
    # return (z, state)
    Declaration("norse", ("LICell", "LI", "LIBoxCell", "LIBox"),
                NeuronSpec(spiking=False, framework="Norse")),
    Declaration("norse", ("SNNCell", "SNNRecurrentCell"),
                NeuronSpec(spike_output=0, time_axis=None, framework="Norse")),
    Declaration("norse", ("SNN", "SNNRecurrent"), NeuronSpec(spike_output=0, time_axis=0, framework="Norse")),
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
    axis 1 (time first); if the example has it on neither, the first guess is kept, and said.

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
    hint = "pass batch_size= or time_axis= to state it"
    if example.dim() >= 2 and shape[1] == seen:
        return seen, (f"batch size {seen}: axis 1 of the example input {shape} (axis 0 taken for time), as the "
                      f"neurons' spike trains {train_shape} show ({hint})")
    return guess, (f"batch size {guess}: axis {axis} of the example input {shape}; the neurons' spike trains "
                   f"{train_shape} do not show it ({hint})")
