"""Per-layer op counting: forward hooks for attribution, a dispatch mode for the ops.

:class:`LayerCounter` pushes a ``TorchDispatchMode`` that sees every aten op and
forward hooks on every module of the model that keep a stack of qualified module
names; each op's counts go to the innermost module running it, by the op rules of
:mod:`profiling.rules`. So functional matmuls (DiT attention), residual adds and
concatenations are attributed too.

The modules of :mod:`profiling.module_rules` are counted whole, with the dispatch mode paused
inside them: spiking neurons (spikes, neurons, membrane updates) and the WKV operator.

Spikes are recognised by provenance, never by looking at values: the spike train of
a neuron (declared by :mod:`profiling.neurons`) is a spike tensor, and so is the output of an op
that :data:`profiling.spikes.PROPAGATION` says yields spikes from its spike inputs (views, max-pool,
logic, masks, ...). Data-dependent counts stay on the device until :meth:`LayerCounter.finish`,
which synchronises once (:mod:`profiling.tally`). ``spike_detection="verify"`` checks the rules by
value (one synchronisation per tensor checked). A module of no known class whose output is binary
without being spikes is refused, checked once per class, as an undeclared neuron.

The spike graph: every tensor remembers its nearest upstream neuron (the latest-called neuron whose spikes
reach it through any ops in the model call), and a synaptic op's dense MACs go to that of its inputs (the
``upstream`` records the conventions read); what the propagation rules make of spikes and of counts of
spikes is marked as counts, and a synaptic op reading spikes or counts records its input's non-zero share
(``input_rated_acs``: the spikformer convention's firing rate).

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

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode, _get_current_dispatch_mode, _pop_mode_temporarily

from profiling.module_rules import (
    KNOWN_NEURONS,
    ModuleRule,
    is_spikingjelly_neuron,
    module_rule,
    spikes_per_step,
    spiking_block_members,
    spiking_blocks,
)
from profiling.neurons import NeuronSpec, NeuronTable, NeuronTypes, counted_spikes_per_step
from profiling.records import UnsupportedOp
from profiling.replay import RECORD, REPLAY, Reuse
from profiling.rules import FREE_OPS, RULES, VALUE_DEPENDENT, Counts, op_base_name
from profiling.spikes import (
    COUNTS,
    SPIKE_DETECTION,
    SYNAPTIC_OPERANDS,
    Derivations,
    SpikeCheck,
    SpikeDetectionError,
    binary_or_silent,
    count_outputs,
    is_binary,
    propagation_of,
    spike_outputs,
)
from profiling.tally import LayerTally, Step, input_rate, neuron_memory, resolve_steps, synaptic_memory
from sdit.models.lif import load_neuron_kernels_quietly

ROOT = "(model)"
OUTSIDE = "(outside model)"  # e.g. the sampler's update between model calls
__all__ = ["KNOWN_NEURONS", "LayerCounter", "SpikeDetectionError", "UnknownNeuronError", "UnsupportedOpError"]

# What an aten op does, decided once per op: count by a rule, nothing, taint, or unknown (and, apart,
# whether it carries spikes).
_RULE, _FREE, _UNSUPPORTED, _VALUE_DEPENDENT = range(4)
_CHECKS_PER_CLASS = 8  # calls of an undeclared class checked for binary outputs, while inconclusive
# What a module's hooks do: name it, count it whole (neuron / module rule), or maybe reuse its counts;
# a reusable call then records or replays.
_NAME, _NEURON, _WHOLE, _REUSABLE, _RECORD, _REPLAY = range(6)


class UnsupportedOpError(RuntimeError):
    """Strict mode met an op that no rule covers."""


class UnknownNeuronError(TypeError):
    """The model has a spiking neuron type the profiler has no declaration for (or one whose output is
    not what its declaration says)."""


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
        neuron_types: Neuron classes beside the built-in declarations (:mod:`profiling.neurons`): classes
            (read with the default :class:`~profiling.neurons.NeuronSpec`) or a mapping class -> spec.
        reuse: Reuse the recorded counts of modules called again with the same input signature,
            spiking blocks too while their neurons count every call (see :mod:`profiling.replay`);
            ``False`` counts every call op by op.
        spike_detection: ``"rules"`` (provenance only) or ``"verify"``: also check by value that every
            tensor called spikes is binary and that no binary operand of a synaptic op was missed;
            :meth:`finish` raises :class:`SpikeDetectionError` listing what it found (``spike_check``).

    Raises:
        UnknownNeuronError: at construction, for a spikingjelly neuron of an undeclared type; while
            running, for a module of an undeclared class that emits binary tensors.
    """

    def __init__(
        self, model: nn.Module, strict: bool = False, neuron_types: NeuronTypes = (),
        reuse: bool = True, spike_detection: str = "rules",
    ) -> None:
        if spike_detection not in SPIKE_DETECTION:
            raise ValueError(f"spike_detection must be one of {', '.join(SPIKE_DETECTION)}, got {spike_detection!r}")
        self.model, self.strict, self.reuse = model, strict, reuse
        self.verify = spike_detection == "verify"
        self.spike_check = SpikeCheck()
        self.neurons = NeuronTable(neuron_types)
        modules = list(model.named_modules())
        self.names: dict[int, str] = {id(m): (name or ROOT) for name, m in modules}
        self.kinds: dict[str, str] = {(name or ROOT): type(m).__name__ for name, m in modules}
        self.kinds[OUTSIDE] = "outside model"
        # A module that computes in integers says so (``precision``: "int8", "w4a3", ...); the rest is float.
        self.precisions: dict[str, str] = {(name or ROOT): m.precision for name, m in modules
                                           if isinstance(getattr(m, "precision", None), str)}
        self.in_spiking_block = spiking_block_members(modules, self.neurons.is_neuron)
        self.blocks = spiking_blocks(model, self.neurons.is_neuron, modules)
        self.has_neurons = any(self.neurons.is_neuron(m) for _, m in modules)
        # The first spike train seen: (its shape, its time axis or None), for the batch size (profiling.neurons).
        self.first_train: tuple[tuple[int, ...], int | None] | None = None
        self._specs: dict[int, NeuronSpec] = {}
        self._derivations = Derivations()
        self._checked_classes: dict[type, int] = {}  # class -> calls checked for undeclared spikes
        # Modules inside a neuron (a surrogate function's Heaviside): part of the neuron, never checked.
        self._neuron_parts = {id(c) for _, m in modules if self.neurons.is_neuron(m)
                              for c in m.modules() if c is not m}
        if self.has_neurons:
            load_neuron_kernels_quietly()
        # What the hooks do per module, decided once; the module rule of those counted whole.
        self._action: dict[int, int] = {}
        self._rules: dict[int, ModuleRule] = {}
        for name, m in modules:
            self._action[id(m)] = self._action_of(name, m)
        self._reuse = Reuse(lambda m: self._action.get(id(m)) == _NEURON)
        self._replay_entries: list[tuple[tuple[int, str] | None, int]] = []  # per running replay: (entry, calls)
        self._stack: list[str] = []
        # Per running named module: (what its pre-hook did, a paused dispatch mode to resume or None).
        self._frames: list[tuple[int, contextlib.AbstractContextManager[Any] | None]] = []
        self._replaying = 0  # > 0 inside a module whose counts were reused: its children do nothing
        # Spike tensors by id, each with a weak reference whose callback drops the entry when the
        # tensor dies (so an id reused by a new tensor never reads as spikes).
        self._spikes: dict[int, weakref.ref] = {}
        self._counts: dict[int, weakref.ref] = {}  # counts of spikes (profiling.spikes.count_outputs), likewise
        self._spike_test = self._is_spike if self.has_neurons else _never
        # aten op -> (what, rule, written args, its name if it may carry spikes)
        self._plan: dict[Any, tuple[int, Any, tuple[int | str, ...], str | None]] = {}
        # The spike graph: per tensor (by id, weakly held, like spike marks) its nearest upstream neuron on the
        # data path, (call number, name): the latest-called neuron whose spikes reach it through any ops within
        # the current model call. Dense MACs go to the source of their op's inputs (``upstream``).
        self._sources: dict[int, tuple[weakref.ref, int, str]] = {}
        self._calls = 0  # neuron calls so far: orders the sources
        self._last_neuron: tuple[int, str] | None = None  # the latest neuron call (for a replayed module's output)
        self._steps: list[Step] = []
        self._current: dict[str, LayerTally] | None = None
        self._unsupported: dict[str, tuple[int, dict[str, None]]] = {}
        self._handles: list[Any] = []
        self._mode = _DispatchCounter(self)

    def _action_of(self, name: str, module: nn.Module) -> int:
        spec = self.neurons.spec_of(module)
        if spec is not None and spec.hidden_synapses and not self.neurons.user_declared(module):
            raise UnknownNeuronError(
                f"{name}: {spec.framework} {type(module).__name__} cannot be counted: {spec.hidden_synapses} "
                f"(or declare it with neuron_types= to count its membrane updates alone, without those synapses)"
            )
        if spec is not None and spec.spiking:
            self._specs[id(module)] = spec
            return _NEURON
        if spec is None and is_spikingjelly_neuron(module):
            raise UnknownNeuronError(
                f"{name}: neuron type {type(module).__name__} has no declaration; "
                f"known: {self.neurons.names()} (pass neuron_types= to add one)"
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
        self._sources.clear()  # a tensor made in an earlier call (the sampler's x_t) carries no source here
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
            if decision == RECORD:
                self._reuse.recorders[-1].start = self._calls
            if recording is not None:
                entry = self._source_of(_tensors(args, kwargs))
                self._replay(recording, entry)
                self._replay_entries.append((entry, self._calls))
                self._replaying = 1
        # Neurons, modules counted whole and replays run with their own ops paused.
        self._frames.append((action, self._pause() if action in (_NEURON, _WHOLE, _REPLAY) else None))

    def _post_hook(self, module: nn.Module, args: Any, kwargs: Any, out: Any) -> None:
        if self._replaying > 1:
            self._replaying -= 1
            if self._action.get(id(module)) == _NEURON:
                self._count_neuron(self.names[id(module)], module, out)  # the replay paused the mode
            return
        if id(module) not in self._action or not self._frames:
            return
        action, paused = self._frames.pop()
        try:
            if action in (_NAME, _RECORD):
                self._check_undeclared(self._stack[-1], module, args, out)
                if memory := synaptic_memory(module, args, kwargs, out, self._spike_test):
                    self._add(self._stack[-1], memory)  # data movement of a Linear / Conv call (profiling.tally)
            if action == _RECORD:
                self._reuse.end_record(module)
            elif action == _REPLAY:
                self._replaying = 0
                self._reuse.end_replay()
                entry, calls = self._replay_entries.pop()
                # its ops ran unseen: its outputs' source is the last neuron it ran, or else its inputs'
                last = self._last_neuron if self._last_neuron is not None and self._last_neuron[0] >= calls else entry
                if last is not None:
                    for t in _tensors(out if isinstance(out, list | tuple) else (out,)):
                        self._set_source(t, last)
            elif action == _NEURON:
                self._count_neuron(self._stack[-1], module, out)  # while paused: its own ops go uncounted
            elif action == _WHOLE:
                self._add(self._stack[-1], self._rules[id(module)](module, args, out))
        finally:  # also when a check above raises: the outer modules' hooks still run, on a consistent state
            if paused is not None:
                paused.__exit__(None, None, None)
            if self._stack:
                self._stack.pop()

    def _count_neuron(self, name: str, module: nn.Module, out: Any) -> None:
        spec = self._specs[id(module)]
        train = spec.spike_train(out)
        if train is None:
            raise UnknownNeuronError(
                f"{name}: {type(module).__name__} returned {type(out).__name__}, with no spike tensor at output "
                f"index {spec.spike_output}; declare where its spikes are: neuron_types={{{type(module).__name__}: "
                f"profiling.neurons.NeuronSpec(spike_output=...)}}")
        steps, axis = spec.steps_of(module, train)  # a view with its own time axis (sinabs's B x T split)
        if self.first_train is None:
            self.first_train = (tuple(steps.shape), axis)
        counts = spec.output_of(module) == COUNTS  # a multi-spike neuron: its spikes are the sum of its counts
        per_step = counted_spikes_per_step(steps, axis) if counts else spikes_per_step(module, steps, axis)
        tally = self._tally(name)
        tally.add({"neuron_updates": train.numel() * spec.updates_per_element})
        tally.add(neuron_memory(module, train))  # its state traffic (profiling.tally)
        tally.spikes_per_step.append(per_step)  # the spikes column is their sum, taken in finish()
        tally.steps += per_step.shape[0]
        if counts:
            self._mark_counts(train)
        else:
            self._mark_spikes(train, name)
        self._last_neuron = (self._calls, name)
        self._calls += 1
        for t in _tensors(out if isinstance(out, list | tuple) else (out,)):
            self._set_source(t, self._last_neuron)
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

    def _add(self, name: str, counts: Counts, dense: int = 0, source: tuple[int, str] | None = None) -> None:
        """Add one op's (or one module's) counts to layer ``name``; ``dense`` MACs go to ``source``, the
        nearest upstream neuron of the op's inputs."""
        tally = self._tally(name)
        tally.add(counts)
        if dense:
            tally.upstream[None if source is None else source[1]] += dense
        for recording in self._reuse.recorders:
            recording.add(name, counts, dense, source)

    def _replay(self, recording: Any, entry: tuple[int, str] | None) -> None:
        if self._current is None and recording.layers:  # a call that counted nothing opens no step
            self.begin_step()
        if self._current is not None:
            self._reuse.replay(recording, self._current, self.kinds, entry)
        for (op, name), times in recording.unsupported.items():
            self._note_unsupported(op, name, times)

    def _note_unsupported(self, op: str, name: str, times: int = 1) -> None:
        count, layers = self._unsupported.get(op, (0, {}))
        layers[name] = None
        self._unsupported[op] = (count + times, layers)
        for recording in self._reuse.recorders:
            recording.unsupported[(op, name)] = recording.unsupported.get((op, name), 0) + times

    # ---- the spike graph ---------------------------------------------------------
    def _source_of(self, tensors: list[Tensor]) -> tuple[int, str] | None:
        """The nearest upstream neuron of ``tensors``: the latest-called source among them, or ``None``."""
        best = None
        sources = self._sources
        for t in tensors:
            entry = sources.get(id(t))
            if entry is not None and entry[0]() is t and (best is None or entry[1] > best[0]):
                best = (entry[1], entry[2])
        return best

    def _set_source(self, t: Tensor, source: tuple[int, str]) -> None:
        key = id(t)
        sources = self._sources
        sources[key] = (weakref.ref(t, lambda _ref, key=key: sources.pop(key, None)), *source)

    # ---- spikes ------------------------------------------------------------------
    def _is_spike(self, x: Any) -> bool:
        ref = self._spikes.get(id(x))
        return ref is not None and ref() is x

    def _is_derived(self, x: Any) -> bool:
        """Spikes, or counts of spikes."""
        if self._is_spike(x):
            return True
        ref = self._counts.get(id(x))
        return ref is not None and ref() is x

    def _mark_counts(self, t: Tensor) -> None:
        key = id(t)
        self._spikes.pop(key, None)
        counts = self._counts
        ref = counts[key] = weakref.ref(t, lambda _ref, key=key: counts.pop(key, None))
        for recording in self._reuse.recorders:  # kept past the call: a replay would not mark it
            recording.spikes.append(ref)

    def _mark_spikes(self, t: Tensor, source: str) -> None:
        if self.verify:
            self.spike_check.checked += 1
            if not self._by_value(binary_or_silent, t):
                self.spike_check.not_binary.append((self._stack[-1] if self._stack else OUTSIDE, source))
        key = id(t)
        self._counts.pop(key, None)
        spikes = self._spikes
        ref = spikes[key] = weakref.ref(t, lambda _ref, key=key: spikes.pop(key, None))
        for recording in self._reuse.recorders:
            recording.spikes.append(ref)

    # ---- ops ---------------------------------------------------------------------
    def _on_op(self, func: Any, args: Any, kwargs: Any, out: Any) -> None:
        plan = self._plan.get(func)
        if plan is None:
            plan = self._plan[func] = _plan_of(func)
        what, rule, writes, carries = plan
        source = self._source_of(_tensors(args, kwargs)) if self._sources else None
        if what == _RULE:
            counts = rule(args, kwargs, out, self._spike_test)
            if self._reuse.recorders and self._spikes:
                self._check_spike_independent(rule, args, kwargs, out, counts)
            dense = counts.get("dense_macs", 0)
            self._add(self._stack[-1] if self._stack else OUTSIDE, counts, int(dense) if dense else 0, source)
            if self.verify and func in SYNAPTIC_OPERANDS:
                self._verify_operands(func, args)
            # the firing rate of a synaptic op's actual input (the spikformer convention reads it)
            if dense and (self._spikes or self._counts) and func in SYNAPTIC_OPERANDS:
                x = args[SYNAPTIC_OPERANDS[func][0]]
                if self._is_derived(x):
                    self._add(self._stack[-1] if self._stack else OUTSIDE, input_rate(x, int(dense)))
        elif what == _VALUE_DEPENDENT:
            self._reuse.taint()
            if op_base_name(func) not in FREE_OPS:
                self._unsupported_op(func)
        elif what == _UNSUPPORTED:
            self._unsupported_op(func)
        if source is not None:
            for t in _tensors(out if isinstance(out, list | tuple) else (out,)):
                self._set_source(t, source)
        if not self._spikes and not self._counts:
            return
        marks: list[Tensor] = []
        if carries is not None:
            marks, noted = spike_outputs(carries, args, kwargs, out, self._is_spike, self._derivations)
            for recording in self._reuse.recorders:  # a sum or product kept past the call: not reused
                recording.spikes.extend(noted)
        derived: list[Tensor] = []
        if carries is not None:
            derived = [t for t in count_outputs(carries, args, kwargs, out, self._is_derived, self._derivations)
                       if not any(t is m for m in marks)]
        if writes:  # after the rule, which saw the inputs as they were at the call
            self._unmark_written(writes, args, kwargs, marks + derived)
        for t in marks:
            self._mark_spikes(t, str(func))
        for t in derived:
            self._mark_counts(t)

    def _unmark_written(self, writes: tuple[int | str, ...], args: Any, kwargs: Any, marks: list[Tensor]) -> None:
        """An op that writes into a spike tensor in place (``add_``, ``copy_``, an ``out=``) leaves real values
        under the same tensor object: it is no longer spikes, unless the op yields spikes (``transpose_``,
        ``mul_`` of two spike tensors), whose output the caller marks again."""
        for where in writes:
            t = kwargs.get(where) if isinstance(where, str) else (args[where] if where < len(args) else None)
            if isinstance(t, Tensor) and self._is_derived(t) and not any(t is m for m in marks):
                self._spikes.pop(id(t), None)
                self._counts.pop(id(t), None)
                self._reuse.taint()  # a replayed call would not repeat the unmarking

    # ---- checks by value ---------------------------------------------------------
    def _by_value(self, test: Any, t: Tensor) -> bool:
        """``test(t)`` with the dispatch mode paused where it runs (a hook): its ops are not counted."""
        paused = self._pause()
        try:
            return test(t.detach())
        finally:
            if paused is not None:
                paused.__exit__(None, None, None)

    def _verify_operands(self, func: Any, args: Any) -> None:
        for i in SYNAPTIC_OPERANDS[func]:
            t = args[i] if i < len(args) else None
            if isinstance(t, Tensor) and not self._is_spike(t) and is_binary(t):
                layer = self._stack[-1] if self._stack else OUTSIDE
                self.spike_check.missed.append((layer, str(func), i, tuple(t.shape)))

    def _check_undeclared(self, name: str, module: nn.Module, args: Any, out: Any) -> None:
        """Refuse a module of an undeclared class (not torch's own) that holds no declared neuron, is no part
        of one and reads no spikes, and whose output is binary: a neuron the counter would otherwise take for
        an ANN layer.
        Checked at a class's calls until one is conclusive (an output not all 0 / 1, or one with both), at
        most :data:`_CHECKS_PER_CLASS` calls."""
        cls = type(module)
        tries = self._checked_classes.get(cls, 0)
        if tries >= _CHECKS_PER_CLASS or id(module) in self._neuron_parts:
            return
        if cls.__module__.startswith("torch.") or self.neurons.spec_of(module) is not None or any(
                self.neurons.is_neuron(m) for m in module.modules()):
            self._checked_classes[cls] = _CHECKS_PER_CLASS
            return
        if any(map(self._is_spike, _tensors(args))):
            return  # what an op on spikes makes of them (SEW's a + b) is not a new neuron
        first = isinstance(out, list | tuple) and bool(out) and isinstance(out[0], Tensor)
        train = out[0] if first else out
        if (not isinstance(train, Tensor) or self._is_spike(train) or train.is_complex() or train.dim() == 0
                or not (train.is_floating_point() or train.dtype == torch.bool)):
            self._checked_classes[cls] = _CHECKS_PER_CLASS
            return
        binary, ones = self._by_value(binary_or_silent, train), self._by_value(_all_ones, train)
        silent = binary and not self._by_value(is_binary, train)
        self._checked_classes[cls] = tries + 1 if silent or ones else _CHECKS_PER_CLASS  # all 0 or all 1: undecided
        if binary and not silent and not ones:
            where = "its output[0]" if first else "its output"
            raise UnknownNeuronError(
                f"{name}: {cls.__name__} emits binary values ({where}) that no declared neuron made; if it is "
                f"a spiking neuron pass neuron_types=({cls.__name__},) (or {{{cls.__name__}: NeuronSpec(...)}}, "
                f"NeuronSpec from profiling.neurons), if not "
                f"neuron_types={{{cls.__name__}: NeuronSpec(spiking=False)}}")

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

        Raises:
            SpikeDetectionError: with ``spike_detection="verify"``, if the check by value found anything.
        """
        unsupported = [UnsupportedOp(op=op, count=c, layers=list(ls)) for op, (c, ls) in self._unsupported.items()]
        if self.verify and not self.spike_check.ok:
            raise SpikeDetectionError(self.spike_check)
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


def _plan_of(func: Any) -> tuple[int, Any, tuple[int | str, ...], str | None]:
    writes = _written_arguments(func)
    base = op_base_name(func)
    carries = base if propagation_of(base) is not None else None
    rule = RULES.get(func)
    if rule is not None:
        return _RULE, rule, writes, carries
    if base in VALUE_DEPENDENT:
        return _VALUE_DEPENDENT, None, writes, carries
    if base in FREE_OPS:
        return _FREE, None, writes, carries
    return _UNSUPPORTED, None, writes, carries


def _all_ones(t: Tensor) -> bool:
    """Every element is 1 (a mask of ones, e.g. an attention mask: not taken for spikes)."""
    return bool((t == 1).all())


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
