"""Per-layer op counting: forward hooks for attribution, a dispatch mode for the ops.

:class:`LayerCounter` pushes a ``TorchDispatchMode`` that sees every aten op and
forward hooks on every module of the model that keep a stack of qualified module
names; each op's counts go to the innermost module running it, by the op rules of
:mod:`profiling.rules`. So functional matmuls (DiT attention), residual adds and
concatenations are attributed too.

The modules of :mod:`profiling.module_rules` are counted whole, with the dispatch mode paused
inside them: spiking neurons (spikes, neurons, membrane updates) and the WKV operator.

Spikes are recognised by provenance, never by looking at values: the output of
a neuron is a spike tensor, and so is anything a data-movement op
(:data:`profiling.rules.SPIKE_PRESERVING`) makes from spike tensors only. Data-dependent
counts stay on the device until :meth:`LayerCounter.finish`, which synchronises once
(:mod:`profiling.tally`).

Reuse (``reuse=True``, the default): a module called again with the input signature of an earlier
call replays that call's recorded counts instead of being counted op by op, its neurons still
counted at every call; :mod:`profiling.replay` says when a recording is never reused. For a module
whose ops depend on values the guard cannot see (read through ``.tolist()`` / ``.numpy()``, Python
state that changes between calls) pass ``reuse=False`` (counts op by op everywhere).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode, _get_current_dispatch_mode, _pop_mode_temporarily

from profiling.module_rules import (
    KNOWN_NEURONS,
    ModuleRule,
    is_spikingjelly_neuron,
    module_rule,
    neuron_rule,
    spikes_per_step,
    spiking_block_members,
    spiking_blocks,
)
from profiling.records import UnsupportedOp
from profiling.replay import RECORD, REPLAY, Reuse
from profiling.rules import FREE_OPS, RULES, SPIKE_PRESERVING, VALUE_DEPENDENT, Counts, op_base_name
from profiling.tally import LayerTally, Step, neuron_memory, resolve_steps, synaptic_memory
from sdit.models.lif import load_neuron_kernels_quietly

ROOT = "(model)"
OUTSIDE = "(outside model)"  # e.g. the sampler's update between model calls
__all__ = ["KNOWN_NEURONS", "LayerCounter", "UnknownNeuronError", "UnsupportedOpError"]

# What an aten op does, decided once per op: count by a rule, carry spikes, nothing, taint, or unknown.
_RULE, _PRESERVING, _FREE, _UNSUPPORTED, _VALUE_DEPENDENT = range(5)
# What a module's hooks do: name it, count it whole (neuron / module rule), or maybe reuse its counts;
# a reusable call then records or replays.
_NAME, _NEURON, _WHOLE, _REUSABLE, _RECORD, _REPLAY = range(6)


class UnsupportedOpError(RuntimeError):
    """Strict mode met an op that no rule covers."""


class UnknownNeuronError(TypeError):
    """The model has a spiking neuron type the profiler has no cost model for."""


class _DispatchCounter(TorchDispatchMode):
    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # Counting runs eagerly; without this, torch wraps __torch_dispatch__ in a Dynamo-disable
        # shim that costs about 8 us on every aten op.
        return False

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
        reuse: Reuse the recorded counts of modules called again with the same input signature,
            spiking blocks too while their neurons count every call (see :mod:`profiling.replay`);
            ``False`` counts every call op by op.

    Raises:
        UnknownNeuronError: at construction, for a spikingjelly neuron of an unknown type.
    """

    def __init__(
        self, model: nn.Module, strict: bool = False, neuron_types: tuple[type[nn.Module], ...] = (),
        reuse: bool = True,
    ) -> None:
        self.model, self.strict, self.reuse = model, strict, reuse
        self.neuron_types = KNOWN_NEURONS + tuple(neuron_types)
        modules = list(model.named_modules())
        self.names: dict[int, str] = {id(m): (name or ROOT) for name, m in modules}
        self.kinds: dict[str, str] = {(name or ROOT): type(m).__name__ for name, m in modules}
        self.kinds[OUTSIDE] = "outside model"
        self.in_spiking_block = spiking_block_members(modules, self.neuron_types)
        self.blocks = spiking_blocks(model, self.neuron_types, modules)
        self.has_neurons = any(isinstance(m, self.neuron_types) for _, m in modules)
        if self.has_neurons:
            load_neuron_kernels_quietly()
        # What the hooks do per module, decided once; the module rule of those counted whole.
        self._action: dict[int, int] = {}
        self._rules: dict[int, ModuleRule] = {}
        for name, m in modules:
            self._action[id(m)] = self._action_of(name, m)
        self._reuse = Reuse(lambda m: self._action.get(id(m)) == _NEURON)
        self._stack: list[str] = []
        # Per running named module: (what its pre-hook did, a paused dispatch mode to resume or None).
        self._frames: list[tuple[int, contextlib.AbstractContextManager[Any] | None]] = []
        self._replaying = 0  # > 0 inside a module whose counts were reused: its children do nothing
        # Spike tensors by id, each with a weak reference whose callback drops the entry when the
        # tensor dies (so an id reused by a new tensor never reads as spikes).
        self._spikes: dict[int, weakref.ref] = {}
        self._spike_test = self._is_spike if self.has_neurons else _never
        self._plan: dict[Any, tuple[int, Any, tuple[int | str, ...]]] = {}  # aten op -> (what, rule, written args)
        self._last_neuron: str | None = None
        self._steps: list[Step] = []
        self._current: dict[str, LayerTally] | None = None
        self._unsupported: dict[str, tuple[int, dict[str, None]]] = {}
        self._handles: list[Any] = []
        self._mode = _DispatchCounter(self)

    def _action_of(self, name: str, module: nn.Module) -> int:
        if isinstance(module, self.neuron_types):
            self._rules[id(module)] = neuron_rule
            return _NEURON
        if is_spikingjelly_neuron(module):
            raise UnknownNeuronError(
                f"{name}: neuron type {type(module).__name__} has no cost model; "
                f"known: {', '.join(t.__name__ for t in self.neuron_types)} (pass neuron_types= to add one)"
            )
        rule = module_rule(module)
        if rule is not None:
            self._rules[id(module)] = rule
            return _WHOLE
        return _REUSABLE if self.reuse else _NAME

    # ---- context -----------------------------------------------------------------
    def __enter__(self) -> LayerCounter:
        for module in self.model.modules():
            self._handles.append(module.register_forward_pre_hook(self._pre_hook, with_kwargs=True))
            self._handles.append(module.register_forward_hook(self._post_hook, with_kwargs=True, always_call=True))
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        while self._frames:  # a forward that raised inside a paused module
            _, paused = self._frames.pop()
            if paused is not None:
                paused.__exit__(None, None, None)
        self._reuse.close()
        self._mode.__exit__(*exc)
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._stack.clear()
        self._replaying = 0

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
    def _pause(self) -> contextlib.AbstractContextManager[Any] | None:
        """Pause the dispatch mode (if it is the innermost one); returns what to resume."""
        if _get_current_dispatch_mode() is not self._mode:
            return None
        paused = _pop_mode_temporarily()
        paused.__enter__()
        return paused

    def _pre_hook(self, module: nn.Module, args: Any, kwargs: Any) -> None:
        if self._replaying:
            self._replaying += 1
            return
        action = self._action.get(id(module))
        if action is None:
            return
        self._stack.append(self.names[id(module)])
        if action == _REUSABLE:
            decision, recording = self._reuse.enter(module, args, kwargs, self._spike_test)
            action = _RECORD if decision == RECORD else _REPLAY if decision == REPLAY else _NAME
            if recording is not None:
                self._replay(recording)
                self._replaying = 1
        # Neurons, modules counted whole and replays run with their own ops paused.
        self._frames.append((action, self._pause() if action in (_NEURON, _WHOLE, _REPLAY) else None))

    def _post_hook(self, module: nn.Module, args: Any, kwargs: Any, out: Any) -> None:
        if self._replaying > 1:
            self._replaying -= 1
            if self._action.get(id(module)) == _NEURON and isinstance(out, Tensor):
                self._count_neuron(self.names[id(module)], module, args, out)  # the replay paused the mode
            return
        if id(module) not in self._action or not self._frames:
            return
        action, paused = self._frames.pop()
        if action in (_RECORD, _NAME) and (memory := synaptic_memory(module, args, kwargs, out, self._spike_test)):
            self._add(self._stack[-1], memory)  # data movement of a Linear / Conv call (profiling.tally)
        if action == _RECORD:
            self._reuse.end_record(module)
        elif action == _REPLAY:
            self._replaying = 0
            self._reuse.end_replay()
        elif action == _NEURON and isinstance(out, Tensor):
            self._count_neuron(self._stack[-1], module, args, out)  # while paused: its own ops go uncounted
        elif action == _WHOLE:
            self._add(self._stack[-1], self._rules[id(module)](module, args, out))
        if paused is not None:
            paused.__exit__(None, None, None)
        if self._stack:
            self._stack.pop()

    def _count_neuron(self, name: str, module: nn.Module, args: Any, out: Tensor) -> None:
        per_step = spikes_per_step(module, out)  # (steps,) on device
        tally = self._tally(name)
        tally.add(self._rules[id(module)](module, args, out))
        tally.add(neuron_memory(module, out))  # its state traffic (profiling.tally)
        tally.spikes_per_step.append(per_step)  # the spikes column is their sum, taken in finish()
        tally.steps += per_step.shape[0]
        self._mark_spikes(out)
        self._last_neuron = name
        for recording in self._reuse.recorders:
            recording.neuron(name)

    # ---- counts ------------------------------------------------------------------
    def _tally(self, name: str) -> LayerTally:
        if self._current is None:
            self.begin_step()
        tally = self._current.get(name)
        if tally is None:
            tally = self._current[name] = LayerTally(kind=self.kinds.get(name, "?"))
        return tally

    def _add(self, name: str, counts: Counts, dense: int = 0) -> None:
        """Add one op's (or one module's) counts to layer ``name``; ``dense`` MACs go upstream."""
        tally = self._tally(name)
        tally.add(counts)
        if dense:
            tally.upstream[self._last_neuron] += dense
        for recording in self._reuse.recorders:
            recording.add(name, counts, dense)

    def _replay(self, recording: Any) -> None:
        if self._current is None and recording.layers:  # a call that counted nothing opens no step
            self.begin_step()
        if self._current is not None:
            self._reuse.replay(recording, self._current, self.kinds, self._last_neuron)
        for (op, name), times in recording.unsupported.items():
            self._note_unsupported(op, name, times)

    def _note_unsupported(self, op: str, name: str, times: int = 1) -> None:
        count, layers = self._unsupported.get(op, (0, {}))
        layers[name] = None
        self._unsupported[op] = (count + times, layers)
        for recording in self._reuse.recorders:
            recording.unsupported[(op, name)] = recording.unsupported.get((op, name), 0) + times

    # ---- spikes ------------------------------------------------------------------
    def _is_spike(self, x: Any) -> bool:
        ref = self._spikes.get(id(x))
        return ref is not None and ref() is x

    def _mark_spikes(self, t: Tensor) -> None:
        key = id(t)
        spikes = self._spikes
        ref = spikes[key] = weakref.ref(t, lambda _ref, key=key: spikes.pop(key, None))
        for recording in self._reuse.recorders:
            recording.spikes.append(ref)

    # ---- ops ---------------------------------------------------------------------
    def _on_op(self, func: Any, args: Any, kwargs: Any, out: Any) -> None:
        plan = self._plan.get(func)
        if plan is None:
            plan = self._plan[func] = _plan_of(func)
        what, rule, writes = plan
        if what == _RULE:
            counts = rule(args, kwargs, out, self._spike_test)
            if self._reuse.recorders and self._spikes:
                self._check_spike_independent(rule, args, kwargs, out, counts)
            dense = counts.get("dense_macs", 0)
            self._add(self._stack[-1] if self._stack else OUTSIDE, counts, int(dense) if dense else 0)
        elif what == _PRESERVING:
            if self.has_neurons and self._spikes:
                inputs = _tensors(args, kwargs)
                if inputs and all(self._is_spike(a) for a in inputs):
                    for o in _tensors(out):
                        self._mark_spikes(o)  # recorded calls check that these die inside them
        elif what == _VALUE_DEPENDENT:
            self._reuse.taint()
            if op_base_name(func) not in FREE_OPS:
                self._unsupported_op(func)
        elif what == _UNSUPPORTED:
            self._unsupported_op(func)
        if writes and self._spikes:  # after the rule, which saw the inputs as they were at the call
            self._unmark_written(writes, args, kwargs, what)

    def _unmark_written(self, writes: tuple[int | str, ...], args: Any, kwargs: Any, what: int) -> None:
        """An op that writes into a spike tensor in place (``mul_``, ``add_``, ``copy_``, an ``out=``) leaves
        real values under the same tensor object: it is no longer spikes. A spike-preserving in-place op
        (``transpose_``) re-marks its output below when its inputs are all spikes."""
        for where in writes:
            t = kwargs.get(where) if isinstance(where, str) else (args[where] if where < len(args) else None)
            if isinstance(t, Tensor) and self._is_spike(t) and what != _PRESERVING:
                self._spikes.pop(id(t), None)
                self._reuse.taint()  # a replayed call would not repeat the unmarking

    def _unsupported_op(self, func: Any) -> None:
        name = self._stack[-1] if self._stack else OUTSIDE
        if self.strict:
            raise UnsupportedOpError(f"no counting rule for {func} (in layer {name}); strict mode")
        self._note_unsupported(str(func), name)

    def _check_spike_independent(self, rule: Any, args: Any, kwargs: Any, out: Any, counts: Counts) -> None:
        """Taint the running recordings if a rule's integer counts depend on which inputs are spikes
        (rules put spike-dependent counts in tensors, which taint anyway; this does not rely on it)."""
        if any(isinstance(v, Tensor) for v in counts.values()):
            return  # data-dependent: Recording.add taints
        if not any(self._is_spike(a) for a in _tensors(args, kwargs)):
            return
        if rule(args, kwargs, out, _never) != counts:
            self._reuse.taint()

    # ---- results -----------------------------------------------------------------
    def finish(self) -> tuple[list[tuple[dict[str, Any], dict[str, dict[str, Any]]]], list[UnsupportedOp]]:
        """Resolve device counts (one synchronisation) into plain ints.

        Returns:
            ``(steps, unsupported)``: per step its meta and, per layer, a dict with
            ``kind``, every column of :data:`profiling.records.COLUMNS`, ``spikes_per_step`` (neurons),
            ``steps`` (spiking steps run) and ``upstream`` (dense MACs by upstream neuron).
        """
        unsupported = [UnsupportedOp(op=op, count=c, layers=list(ls)) for op, (c, ls) in self._unsupported.items()]
        return resolve_steps(self._steps), unsupported


def _written_arguments(func: Any) -> tuple[int | str, ...]:
    """Positions (and keyword names) of the arguments ``func`` writes into, from its schema."""
    schema = getattr(func, "_schema", None)
    if schema is None:
        return ()
    out: list[int | str] = []
    for i, arg in enumerate(schema.arguments):
        if arg.alias_info is not None and arg.alias_info.is_write:
            out.append(arg.name if arg.kwarg_only else i)
    return tuple(out)


def _plan_of(func: Any) -> tuple[int, Any, tuple[int | str, ...]]:
    writes = _written_arguments(func)
    rule = RULES.get(func)
    if rule is not None:
        return _RULE, rule, writes
    base = op_base_name(func)
    if base in SPIKE_PRESERVING:
        return _PRESERVING, None, writes
    if base in VALUE_DEPENDENT:
        return _VALUE_DEPENDENT, None, writes
    if base in FREE_OPS:
        return _FREE, None, writes
    return _UNSUPPORTED, None, writes


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
