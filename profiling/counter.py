"""Per-layer op counting: forward hooks for attribution, a dispatch mode for the ops.

:class:`LayerCounter` pushes a ``TorchDispatchMode`` that sees every aten op and
forward hooks on every module of the model that keep a stack of qualified module
names; each op's counts go to the innermost module running it. So functional
matmuls (DiT attention), residual adds and concatenations are attributed too.

Two kinds of modules are counted whole, by a module rule, with the dispatch mode
paused inside them: spiking neurons (spikes, neurons, membrane updates) and the
WKV operator (a closed form over its input shape, whatever implementation runs).

Spikes are recognised by provenance, never by looking at values: the output of
a neuron is a spike tensor, and so is anything a data-movement op
(:data:`profiling.rules.SPIKE_PRESERVING`) makes from spike tensors only. Data-dependent
counts stay on the device until :meth:`LayerCounter.finish`, which synchronises once.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from spikingjelly.activation_based import neuron as sj_neuron
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode, _get_current_dispatch_mode, _pop_mode_temporarily

from profiling.records import COLUMNS, NEURON_COLUMNS, UnsupportedOp
from profiling.rules import FREE_OPS, RULES, SPIKE_PRESERVING, Counts, op_base_name
from sdit.models.wkv import WKV

ROOT = "(model)"
OUTSIDE = "(outside model)"  # e.g. the sampler's update between model calls
__all__ = ["COLUMNS", "NEURON_COLUMNS", "LayerCounter", "UnknownNeuronError", "UnsupportedOp", "UnsupportedOpError"]
# Neuron classes whose cost model we know: one membrane update per neuron per step.
KNOWN_NEURONS: tuple[type[nn.Module], ...] = (sj_neuron.LIFNode, sj_neuron.IFNode, sj_neuron.ParametricLIFNode)


class UnsupportedOpError(RuntimeError):
    """Strict mode met an op that no rule covers."""


class UnknownNeuronError(TypeError):
    """The model has a spiking neuron type the profiler has no cost model for."""


def wkv_counts(k: Tensor) -> Counts:
    """Cost of the stable WKV recurrence per (batch, token, channel) element.

    Per element: 4 exponentials (two for the output, two for the state update),
    7 multiplications/divisions, 10 additions/subtractions, 2 maxima.
    """
    elements = k.numel()
    return {"exp": 4 * elements, "muls": 7 * elements, "adds": 10 * elements, "other": 2 * elements}


@dataclass
class LayerTally:
    """Running counts of one layer (over one diffusion step or a whole forward)."""

    kind: str
    counts: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    spikes_per_step: list[Any] = field(default_factory=list)  # neuron layers: per spiking step
    steps: int = 0  # neuron layers: spiking steps run
    upstream: dict[str | None, int] = field(default_factory=lambda: defaultdict(int))  # dense MACs by upstream neuron

    def add(self, counts: Counts) -> None:
        for column, value in counts.items():
            self.counts[column].append(value)


class _DispatchCounter(TorchDispatchMode):
    def __init__(self, owner: LayerCounter) -> None:
        super().__init__()
        self.owner = owner

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.owner._on_op(func, args, kwargs, out)
        return out


class LayerCounter:
    """Count ops per layer of ``model`` while it runs.

    Use as a context manager; wrap each model call in :meth:`step` to get counts per
    diffusion step::

        with LayerCounter(model) as counter:
            with counter.step(index=0, t=500):
                model(x, t)
        steps, unsupported = counter.finish()

    Args:
        model: The model whose modules name the layers.
        strict: Raise :class:`UnsupportedOpError` on the first op no rule covers.
        neuron_types: Extra neuron classes to count like LIF (spikes, updates).

    Raises:
        UnknownNeuronError: at construction, for a spikingjelly neuron of an unknown type.
    """

    def __init__(
        self, model: nn.Module, strict: bool = False, neuron_types: tuple[type[nn.Module], ...] = ()
    ) -> None:
        self.model = model
        self.strict = strict
        self.neuron_types = KNOWN_NEURONS + tuple(neuron_types)
        modules = list(model.named_modules())
        self.names: dict[int, str] = {id(m): (name or ROOT) for name, m in modules}
        self.kinds: dict[str, str] = {(name or ROOT): type(m).__name__ for name, m in modules}
        for name, module in modules:
            if isinstance(module, sj_neuron.BaseNode) and not isinstance(module, self.neuron_types):
                raise UnknownNeuronError(
                    f"{name}: neuron type {type(module).__name__} has no cost model; "
                    f"known: {', '.join(t.__name__ for t in self.neuron_types)} (pass neuron_types= to add one)"
                )
        self.kinds[OUTSIDE] = "outside model"
        self.in_spiking_block = _spiking_block_members(modules, self.neuron_types)
        self.blocks = spiking_blocks(model, self.neuron_types, modules)
        self.has_neurons = any(isinstance(m, self.neuron_types) for _, m in modules)
        self._stack: list[str] = []
        self._paused: list[contextlib.AbstractContextManager[Any] | None] = []
        # Spike tensors by id, each with a weak reference whose callback drops the entry when the
        # tensor dies (so an id reused by a new tensor never reads as spikes).
        self._spikes: dict[int, weakref.ref] = {}
        self._spike_test = self._is_spike if self.has_neurons else _never
        self._plan: dict[Any, tuple[int, Any]] = {}  # aten op -> (what to do, rule), decided once per op
        self._last_neuron: str | None = None
        self._steps: list[tuple[dict[str, Any], dict[str, LayerTally]]] = []
        self._current: dict[str, LayerTally] | None = None
        self._unsupported: dict[str, tuple[int, dict[str, None]]] = {}
        self._handles: list[Any] = []
        self._mode = _DispatchCounter(self)

    # ---- context -----------------------------------------------------------------
    def __enter__(self) -> LayerCounter:
        for module in self.model.modules():
            self._handles.append(module.register_forward_pre_hook(self._pre_hook))
            self._handles.append(module.register_forward_hook(self._post_hook, always_call=True))
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        while self._paused:  # a forward that raised inside a paused module
            paused = self._paused.pop()
            if paused is not None:
                paused.__exit__(None, None, None)
        self._mode.__exit__(*exc)
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._stack.clear()

    @contextlib.contextmanager
    def step(self, **meta: Any) -> Iterator[None]:
        """Collect the ops of one model call (one diffusion step) under ``meta``."""
        self.begin_step(**meta)
        try:
            yield
        finally:
            self.end_step()

    def begin_step(self, **meta: Any) -> None:
        """Open a window: ops until :meth:`end_step` count as one step with ``meta``."""
        self.end_step()
        self._current = {}
        self._last_neuron = None
        self._steps.append((meta, self._current))

    def end_step(self) -> None:
        self._current = None

    # ---- hooks -------------------------------------------------------------------
    def _module_rule(self, module: nn.Module) -> bool:
        return isinstance(module, self.neuron_types) or isinstance(module, WKV)

    def _pre_hook(self, module: nn.Module, args: Any) -> None:
        name = self.names.get(id(module))
        if name is None:
            return
        self._stack.append(name)
        if self._module_rule(module):
            paused = _pop_mode_temporarily() if _get_current_dispatch_mode() is self._mode else None
            if paused is not None:
                paused.__enter__()
            self._paused.append(paused)
            if isinstance(module, WKV):
                self._tally(name).add(wkv_counts(args[2]))

    def _post_hook(self, module: nn.Module, args: Any, out: Any) -> None:
        name = self.names.get(id(module))
        if name is None:
            return
        if self._module_rule(module) and self._paused:
            if isinstance(module, self.neuron_types) and isinstance(out, Tensor):
                self._count_neuron(name, module, out)  # while paused: its own ops go uncounted
            paused = self._paused.pop()
            if paused is not None:
                paused.__exit__(None, None, None)
        if self._stack and self._stack[-1] == name:
            self._stack.pop()

    def _count_neuron(self, name: str, module: nn.Module, out: Tensor) -> None:
        multi = getattr(module, "step_mode", "s") == "m"
        steps = out.shape[0] if multi else 1
        per_step = torch.count_nonzero(out.reshape(steps, -1), dim=1)  # (steps,) on device
        tally = self._tally(name)
        tally.add({"spikes": per_step.sum(), "neuron_updates": out.numel()})
        tally.spikes_per_step.append(per_step)
        tally.steps += steps
        self._mark_spikes(out)
        self._last_neuron = name

    # ---- ops ---------------------------------------------------------------------
    def _tally(self, name: str) -> LayerTally:
        if self._current is None:
            self.begin_step()
        if name not in self._current:
            self._current[name] = LayerTally(kind=self.kinds.get(name, "?"))
        return self._current[name]

    def _is_spike(self, x: Any) -> bool:
        ref = self._spikes.get(id(x))
        return ref is not None and ref() is x

    def _mark_spikes(self, t: Tensor) -> None:
        key = id(t)
        spikes = self._spikes
        spikes[key] = weakref.ref(t, lambda _ref, key=key: spikes.pop(key, None))

    def _plan_of(self, func: Any) -> tuple[int, Any]:
        rule = RULES.get(func)
        if rule is not None:
            return _RULE, rule
        base = op_base_name(func)
        if base in SPIKE_PRESERVING:
            return _PRESERVING, None
        if base in FREE_OPS:
            return _FREE, None
        return _UNSUPPORTED, None

    def _on_op(self, func: Any, args: Any, kwargs: Any, out: Any) -> None:
        plan = self._plan.get(func)
        if plan is None:
            plan = self._plan[func] = self._plan_of(func)
        what, rule = plan
        if what == _RULE:
            counts = rule(args, kwargs, out, self._spike_test)
            tally = self._tally(self._stack[-1] if self._stack else OUTSIDE)
            tally.add(counts)
            dense = counts.get("dense_macs")
            if dense:
                tally.upstream[self._last_neuron] += int(dense)
            return
        if what == _PRESERVING:
            if self.has_neurons and self._spikes:
                inputs = _tensors(args, kwargs)
                if inputs and all(self._is_spike(a) for a in inputs):
                    for o in _tensors(out):
                        self._mark_spikes(o)
            return
        if what == _FREE:
            return
        name = self._stack[-1] if self._stack else OUTSIDE
        op = str(func)
        if self.strict:
            raise UnsupportedOpError(f"no counting rule for {op} (in layer {name}); strict mode")
        count, layers = self._unsupported.get(op, (0, {}))
        layers[name] = None
        self._unsupported[op] = (count + 1, layers)

    # ---- results -----------------------------------------------------------------
    def finish(self) -> tuple[list[tuple[dict[str, Any], dict[str, dict[str, Any]]]], list[UnsupportedOp]]:
        """Resolve device counts (one synchronisation) into plain ints.

        Returns:
            ``(steps, unsupported)``: per step its meta and, per layer, a dict with
            ``kind``, every column of :data:`COLUMNS`, ``spikes_per_step`` (neurons),
            ``steps`` (spiking steps run) and ``upstream`` (dense MACs by upstream neuron).
        """
        pending: list[Tensor] = []
        for _, layers in self._steps:
            for tally in layers.values():
                for values in tally.counts.values():
                    pending.extend(v for v in values if isinstance(v, Tensor))
                pending.extend(tally.spikes_per_step)
        resolved = _resolve(pending)
        steps = []
        for meta, layers in self._steps:
            out_layers = {}
            for name, tally in layers.items():
                record: dict[str, Any] = {"kind": tally.kind, **dict.fromkeys(COLUMNS, 0)}
                for column, values in tally.counts.items():
                    record[column] = sum(map(resolved, values))
                per_step = [resolved(v) for v in tally.spikes_per_step]
                record["spikes_per_step"] = _sum_by_step(per_step)
                record["steps"] = tally.steps
                record["upstream"] = dict(tally.upstream)
                out_layers[name] = record
            steps.append((meta, out_layers))
        unsupported = [UnsupportedOp(op=op, count=c, layers=list(ls)) for op, (c, ls) in self._unsupported.items()]
        return steps, unsupported


_RULE, _PRESERVING, _FREE, _UNSUPPORTED = range(4)


def _never(x: Any) -> bool:
    """The spike test of a model without neurons: nothing is spikes."""
    return False


def _tensors(*trees: Any) -> list[Tensor]:
    """Tensors among ``trees`` and one level of lists / tuples / dict values in them (what aten ops take)."""
    out: list[Tensor] = []
    for tree in trees:
        items = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, list | tuple) else (tree,)
        for item in items:
            if isinstance(item, Tensor):
                out.append(item)
            elif isinstance(item, list | tuple):
                out.extend(x for x in item if isinstance(x, Tensor))
    return out


def _resolve(pending: list[Tensor]) -> Callable[[Any], Any]:
    """Move all pending device tensors to host in one go; return a lookup."""
    values: dict[int, Any] = {}
    by_device: dict[torch.device, list[Tensor]] = defaultdict(list)
    for t in pending:
        by_device[t.device].append(t)
    for tensors in by_device.values():
        flat = torch.cat([t.reshape(-1).to(torch.int64) for t in tensors]).tolist() if tensors else []
        offset = 0
        for t in tensors:
            n = t.numel()
            chunk = flat[offset : offset + n]
            values[id(t)] = chunk[0] if t.dim() == 0 else chunk
            offset += n

    def lookup(v: Any) -> Any:
        return values[id(v)] if isinstance(v, Tensor) else v

    return lookup


def _sum_by_step(per_call: list[list[int]]) -> list[int]:
    """Spikes per spiking step, summed over calls (multi-step) or listed by call (single-step)."""
    if not per_call:
        return []
    if all(len(c) == len(per_call[0]) for c in per_call) and len(per_call[0]) > 1:
        return [sum(c[i] for c in per_call) for i in range(len(per_call[0]))]
    return [v for c in per_call for v in c]


Named = list[tuple[str, nn.Module]]


def _neuron_holders(modules: Named, neuron_types: tuple[type[nn.Module], ...]) -> set[str]:
    """Names (below the root) of the modules that hold a neuron: every neuron and each of its ancestors."""
    holders: set[str] = set()
    for name, m in modules:
        if name and isinstance(m, neuron_types):
            parts = name.split(".")
            holders.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return holders


def spiking_blocks(model: nn.Module, neuron_types: tuple[type[nn.Module], ...],
                   modules: Named | None = None) -> dict[str, str]:
    """Module name -> the spiking block holding it: its outermost ancestor-or-self below the root
    that holds a neuron and is not a ModuleList / ModuleDict (those only group blocks)."""
    named = list(model.named_modules()) if modules is None else modules
    by_name = dict(named)
    holders = {n for n in _neuron_holders(named, neuron_types)
               if not isinstance(by_name[n], nn.ModuleList | nn.ModuleDict)}
    out = {}
    for name in by_name:
        parts = name.split(".") if name else []
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in holders:
                out[name] = prefix
                break
    return out


def _spiking_block_members(modules: Named, neuron_types: tuple[type[nn.Module], ...]) -> set[str]:
    """Names of modules inside a spiking block: some ancestor below the root holds a neuron."""
    holders = _neuron_holders(modules, neuron_types)
    members = set()
    for name, m in modules:
        parts = name.split(".") if name else []
        ancestors = {".".join(parts[:i]) for i in range(1, len(parts))}
        if ancestors & holders or (name in holders and not isinstance(m, neuron_types)):
            members.add(name)
    return members
