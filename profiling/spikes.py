"""Spike propagation by rule: which ops carry spikes from their inputs to their outputs, as data.

The counter (:mod:`profiling.counter`) knows a tensor is spikes by provenance, never by looking at its
values: a neuron's spike output is spikes, and so is the output of an op of :data:`PROPAGATION` whose
spike inputs are as its entry says. Each entry says what the op yields:

- :data:`BINARY`: a 0/1 tensor, spikes again (max-pool, padding with 0 or 1, concatenation, indexing,
  views, logical and / or / xor / not and their arithmetic forms on two spike tensors: ``a * b``,
  ``a * (1 - b)``, ``1 - a``, ``a + b - a * b``, masks ``q * kv``);
- :data:`COUNTS`: sums or means of spikes (avg-pool, adaptive avg-pool, ``a + b`` of two spike
  tensors, ``sum`` / ``mean``): not spikes; strict counting treats them, like any real value, as MACs.

No rule reads a value: the default counting mode costs no device synchronisation per op. The
``spike_detection="verify"`` mode of :func:`profiling.profile` checks the rules by value
(:class:`SpikeCheck`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

BINARY, COUNTS = "spikes", "counts"
aten = torch.ops.aten


def _is_number(value: Any, allowed: tuple[float, ...]) -> bool:
    return isinstance(value, bool | int | float) and float(value) in allowed


def _pad_value_binary(args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> bool:
    value = args[2] if len(args) > 2 else kwargs.get("value", 0)
    return _is_number(value, (0.0, 1.0))


def _one_minus(args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> bool:
    """``rsub(a, 1)`` is ``1 - a``."""
    other = args[1] if len(args) > 1 else kwargs.get("other")
    alpha = args[2] if len(args) > 2 else kwargs.get("alpha", 1)
    return _is_number(other, (1.0,)) and _is_number(alpha, (1.0,))


def _fill_binary(args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> bool:
    value = args[2] if len(args) > 2 else kwargs.get("value")
    return _is_number(value, (0.0, 1.0))


def _kernel_of_ones(args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> bool:
    """avg_pool with a kernel of one element: each output is one input."""
    kernel = args[1] if len(args) > 1 else kwargs.get("kernel_size")
    kernel = kernel if isinstance(kernel, list | tuple) else [kernel]
    return all(k == 1 for k in kernel)


def _one_element_windows(args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> bool:
    """An adaptive avg-pool whose every window holds one input: each output size a multiple of its input size
    (a 1 x 1 map pooled to any size)."""
    size = args[1] if len(args) > 1 else kwargs.get("output_size")
    size = list(size) if isinstance(size, list | tuple) else [size]
    x = args[0]
    return all(isinstance(o, int) and o % i == 0 for o, i in zip(size, x.shape[x.dim() - len(size):], strict=True))


def _mean_of_one(args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> bool:
    """A mean over axes of size 1."""
    return isinstance(out, Tensor) and out.numel() == args[0].numel()


def _unit_alpha(args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> bool:
    return _is_number(kwargs.get("alpha", 1), (1.0,))


@dataclass(frozen=True)
class Propagation:
    """How a group of aten ops carries spikes.

    Attributes:
        ops: aten op names (every overload, in-place forms too).
        inputs: Which inputs must be spikes: ``"first"`` (argument 0), ``"list"`` (every tensor of the
            list in argument 0: cat, stack), ``"all"`` (every tensor argument), ``"pair"`` (arguments 0
            and 1, both tensors), ``"where"`` (arguments 1 and 2 of ``where(cond, a, b)``), ``"or"``
            (``s - p`` with ``s = a + b`` and ``p = a * b`` of the same two spike tensors).
        yields: :data:`BINARY` (the outputs are spikes) or :data:`COUNTS` (not spikes: real for strict counting).
        outputs: ``"all"`` output tensors, or ``"first"`` (the values of a (values, indices) pair).
        when: A condition ``(args, kwargs, out)`` on the op's plain arguments and shapes (a pad value, a
            scalar, a window size), never on values; or ``None``.
        summary: One line for the conventions doc.
    """

    ops: tuple[str, ...]
    inputs: str
    yields: str
    summary: str
    outputs: str = "all"
    when: Callable[[Sequence[Any], dict[str, Any], Any], bool] | None = None


PROPAGATION: tuple[Propagation, ...] = (
    Propagation(("view", "_unsafe_view", "reshape", "_reshape_alias", "t", "transpose", "permute", "expand",
                 "slice", "select", "unsqueeze", "squeeze", "split", "split_with_sizes", "unbind", "chunk",
                 "clone", "contiguous", "_to_copy", "detach", "alias", "lift_fresh", "as_strided", "repeat",
                 "flip", "roll", "narrow", "flatten", "unflatten", "index", "_unsafe_index", "index_select",
                 "gather", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "upsample_nearest1d",
                 "upsample_nearest2d", "upsample_nearest3d", "reflection_pad1d", "reflection_pad2d",
                 "reflection_pad3d", "replication_pad1d", "replication_pad2d", "replication_pad3d"),
                "first", BINARY, "views, copies, casts, repeats, indexing (by any index), nearest upsampling"),
    Propagation(("cat", "stack"), "list", BINARY, "concatenation of spike tensors only"),
    Propagation(("constant_pad_nd",), "first", BINARY, "padding with 0 or 1", when=_pad_value_binary),
    Propagation(("max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices", "max_pool3d_with_indices",
                 "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d"),
                "first", BINARY, "max-pool, adaptive max-pool (the values, not the indices)", outputs="first"),
    Propagation(("amax", "amin", "max", "min", "maximum", "minimum"), "all", BINARY,
                "max / min over spikes, or of two spike tensors (or / and)", outputs="first"),
    Propagation(("logical_and", "logical_or", "logical_xor", "bitwise_and", "bitwise_or", "bitwise_xor", "mul",
                 "eq", "ne"),
                "pair", BINARY, "and / or / xor of two spike tensors, and a * b (and, masks q * kv)"),
    Propagation(("logical_not", "bitwise_not"), "first", BINARY, "not"),
    Propagation(("rsub",), "first", BINARY, "1 - a (not); a * (1 - b) is then and-not", when=_one_minus),
    Propagation(("where",), "where", BINARY, "where(cond, a, b) of two spike tensors"),
    Propagation(("masked_fill",), "first", BINARY, "masked_fill with 0 or 1", when=_fill_binary),
    Propagation(("sub",), "or", BINARY, "a + b - a * b (or)", when=_unit_alpha),
    Propagation(("add",), "pair", COUNTS, "a + b of two spike tensors (SEW ADD): counts 0, 1, 2",
                when=_unit_alpha),
    Propagation(("avg_pool1d", "avg_pool2d", "avg_pool3d"), "first", BINARY, "avg-pool with a kernel of one element",
                when=_kernel_of_ones),
    Propagation(("adaptive_avg_pool1d", "_adaptive_avg_pool2d", "_adaptive_avg_pool3d"), "first", BINARY,
                "adaptive avg-pool whose windows hold one element (output size a multiple of the input's)",
                when=_one_element_windows),
    Propagation(("mean",), "first", BINARY, "mean over axes of size 1", when=_mean_of_one),
    Propagation(("avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "_adaptive_avg_pool2d",
                 "_adaptive_avg_pool3d", "mean", "sum"),
                "first", COUNTS, "avg-pool, adaptive avg-pool, sum, mean: counts or fractions of spikes"),
)

BY_OP: dict[str, tuple[Propagation, ...]] = {}  # op -> its entries, tried in order
for _entry in PROPAGATION:
    for _op in _entry.ops:
        for _name in (_op, _op + "_"):  # in-place forms: mul_, transpose_ ...
            BY_OP[_name] = (*BY_OP.get(_name, ()), _entry)


def propagation_of(base: str) -> tuple[Propagation, ...] | None:
    """The propagation rules of aten op ``base`` (``aten.add.Tensor`` -> ``add``), or ``None``."""
    return BY_OP.get(base)


def _first_tensor(out: Any) -> list[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, list | tuple) and out and isinstance(out[0], Tensor):
        return [out[0]]
    return []


def _all_tensors(out: Any) -> list[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, list | tuple):
        return [t for t in out if isinstance(t, Tensor)]
    return []


class Derivations:
    """Sums and products of two spike tensors made so far (weakly held), for the or-form ``a + b - a * b``."""

    def __init__(self) -> None:
        self._made: dict[int, tuple[weakref.ref, str, frozenset[int]]] = {}

    def note(self, out: Tensor, kind: str, a: Tensor, b: Tensor) -> weakref.ref:
        key, made = id(out), self._made
        ref = weakref.ref(out, lambda _r, key=key: made.pop(key, None))
        made[key] = (ref, kind, frozenset((id(a), id(b))))
        return ref

    def of(self, t: Any) -> tuple[str, frozenset[int]] | None:
        entry = self._made.get(id(t))
        if entry is None or entry[0]() is not t:
            return None
        return entry[1], entry[2]


def _applies(rule: Propagation, args: Sequence[Any], kwargs: dict[str, Any], out: Any,
             is_spike: Callable[[Any], bool], derivations: Derivations) -> bool:
    if rule.inputs == "first":
        ok = bool(args) and is_spike(args[0])
    elif rule.inputs == "list":
        items = args[0] if args and isinstance(args[0], list | tuple) else ()
        ok = bool(items) and all(isinstance(t, Tensor) and is_spike(t) for t in items)
    elif rule.inputs == "all":
        tensors = [a for a in args if isinstance(a, Tensor)]
        ok = bool(tensors) and all(is_spike(a) for a in tensors)
    elif rule.inputs == "pair":
        ok = len(args) > 1 and isinstance(args[1], Tensor) and is_spike(args[0]) and is_spike(args[1])
    elif rule.inputs == "where":
        ok = (len(args) > 2 and isinstance(args[1], Tensor) and isinstance(args[2], Tensor)
              and is_spike(args[1]) and is_spike(args[2]))
    elif rule.inputs == "or":
        ok = False
        if len(args) > 1:
            s, p = derivations.of(args[0]), derivations.of(args[1])
            ok = s is not None and p is not None and s[0] == "sum" and p[0] == "product" and s[1] == p[1]
    else:  # pragma: no cover - a typo in the table
        raise ValueError(f"unknown propagation inputs {rule.inputs!r}")
    return ok and (rule.when is None or rule.when(args, kwargs, out))


def spike_outputs(base: str, args: Sequence[Any], kwargs: dict[str, Any], out: Any,
                  is_spike: Callable[[Any], bool], derivations: Derivations) -> tuple[list[Tensor], list[weakref.ref]]:
    """The output tensors of op ``base`` that are spikes by :data:`PROPAGATION` (the first entry of the op
    that applies), and the weak references of the sums / products of two spike tensors it noted in
    ``derivations`` (for the or-form), from which inputs are spikes; no value is read."""
    rule = next((r for r in BY_OP.get(base, ()) if _applies(r, args, kwargs, out, is_spike, derivations)), None)
    if rule is None:
        return [], []
    noted: list[weakref.ref] = []
    if len(args) > 1 and isinstance(out, Tensor) and out is not args[0] and isinstance(args[1], Tensor):
        if base == "add":
            noted.append(derivations.note(out, "sum", args[0], args[1]))
        elif base in ("mul", "logical_and", "bitwise_and", "minimum"):
            noted.append(derivations.note(out, "product", args[0], args[1]))
    if rule.yields != BINARY:
        return [], noted
    return (_first_tensor(out) if rule.outputs == "first" else _all_tensors(out)), noted


def count_outputs(base: str, args: Sequence[Any], kwargs: dict[str, Any], out: Any,
                  is_derived: Callable[[Any], bool], derivations: Derivations) -> list[Tensor]:
    """The output tensors of op ``base`` that are **counts of spikes**: what an entry of :data:`PROPAGATION`
    makes when its inputs are spikes or counts of spikes (``is_derived``), and that is not spikes itself
    (the caller marks spikes first): SEW's ``a + b``, a residual stream of summed spike trains, pools and
    sums of spikes, views of those. Their non-zero share is the firing rate the spikformer convention reads
    (:func:`profiling.tally.input_rate`); no value is read here."""
    rule = next((r for r in BY_OP.get(base, ()) if _applies(r, args, kwargs, out, is_derived, derivations)), None)
    if rule is None:
        return []
    return _first_tensor(out) if rule.outputs == "first" else _all_tensors(out)


# ---- checking the rules by value (spike_detection="verify") -------------------------------------

SPIKE_DETECTION = ("rules", "verify")


class SpikeDetectionError(RuntimeError):
    """``spike_detection="verify"`` found a tensor called spikes that is not binary, or a binary tensor
    feeding a synaptic op that the rules did not call spikes."""

    def __init__(self, check: SpikeCheck) -> None:
        self.check = check
        super().__init__(check.message())


@dataclass
class SpikeCheck:
    """What the value check found: ``not_binary`` (tensors called spikes whose values are not all 0/1,
    each ``(layer, op)``) and ``missed`` (binary operands of synaptic ops not called spikes, each
    ``(layer, op, operand, shape)``)."""

    not_binary: list[tuple[str, str]] = field(default_factory=list)
    missed: list[tuple[str, str, int, tuple[int, ...]]] = field(default_factory=list)
    checked: int = 0  # tensors called spikes whose values were checked

    @property
    def ok(self) -> bool:
        return not self.not_binary and not self.missed

    def message(self) -> str:
        lines = [f"spike detection check: {len(self.not_binary)} tensor(s) called spikes are not binary, "
                 f"{len(self.missed)} binary operand(s) of synaptic ops not called spikes"]
        lines += [f"  not binary: {op} in layer {layer}" for layer, op in self.not_binary[:20]]
        lines += [f"  missed: operand {i} of {op} in layer {layer}, shape {tuple(shape)}"
                  for layer, op, i, shape in self.missed[:20]]
        return "\n".join(lines)


def is_binary(t: Tensor) -> bool:
    """By value (one device synchronisation): every element is 0 or 1 and at least one is 1."""
    if t.numel() == 0 or t.is_complex():
        return False
    if t.dtype == torch.bool:
        return bool(t.any())
    return bool(((t == 0) | (t == 1)).all()) and bool((t == 1).any())


def binary_or_silent(t: Tensor) -> bool:
    """By value: every element is 0 or 1 (an all-zero tensor included: a silent spike train)."""
    if t.numel() == 0 or t.is_complex():
        return True
    if t.dtype == torch.bool:
        return True
    return bool(((t == 0) | (t == 1)).all())


# Synaptic ops and the positions of their operands (what a spike could feed).
SYNAPTIC_OPERANDS: dict[Any, tuple[int, ...]] = {
    aten.mm.default: (0, 1),
    aten.bmm.default: (0, 1),
    aten.addmm.default: (1, 2),
    aten.baddbmm.default: (1, 2),
    aten.convolution.default: (0,),
}
