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

Reuse (``reuse=True``, the default): a module called with no spike input costs the same ops every
time it is called with the same input signature (shapes, dtypes, strides, devices, plain argument
values, train/grad/autocast state), except for what its neurons do. Its first call is counted op by
op and recorded; later calls with that signature add the recorded counts and run with the dispatch
mode paused, so a DiT's sampling run is counted op by op only at its first step. A module that holds
neurons (a spiking block, an SDiT) is reused the same way while its neurons still run and are counted
at every call (spikes per T step, neuron updates); the recording keeps, for each dense MAC, which
neuron ran last before it (one inside the module, or "the last one before the call", resolved at each
replay), so the ``upstream`` attribution is the one op-by-op counting gives. A recording is never
reused if anything in it depended on values: a count a rule returned as a tensor (ACs of a spike
input: the spike-driven SDiT stays op by op), a rule whose integer counts change when its spike inputs
are taken for real values, a value read into Python (``.item()``, ``bool(t)``: aten
``_local_scalar_dense``), an op whose output shape depends on data (``nonzero``, boolean indexing,
...), or a spike tensor made during the call that is still alive when it returns (its output, or one
kept in Python state: later ops would see spikes that a replay does not mark). What the guard cannot
see is a value read through ``.tolist()`` / ``.numpy()`` or Python state that changes between calls;
for such a module pass ``reuse=False`` (counts op by op everywhere).
"""

from __future__ import annotations

import contextlib
import sys
import weakref
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from spikingjelly.activation_based import neuron as sj_neuron
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode, _get_current_dispatch_mode, _pop_mode_temporarily

from profiling.records import COLUMNS, NEURON_COLUMNS, UnsupportedOp
from profiling.rules import FREE_OPS, RULES, SPIKE_PRESERVING, Counts, op_base_name
from sdit.models.lif import LIFNode, load_neuron_kernels_quietly
from sdit.models.wkv import WKV

ROOT = "(model)"
OUTSIDE = "(outside model)"  # e.g. the sampler's update between model calls
__all__ = ["COLUMNS", "NEURON_COLUMNS", "LayerCounter", "UnknownNeuronError", "UnsupportedOp", "UnsupportedOpError"]
# Neuron classes whose cost model we know: one membrane update per neuron per step.
KNOWN_NEURONS: tuple[type[nn.Module], ...] = (sj_neuron.LIFNode, sj_neuron.IFNode, sj_neuron.ParametricLIFNode)
# Exactly these classes (not subclasses, which may change the output) fire a Heaviside of the membrane.
_BINARY_NEURONS = frozenset({*KNOWN_NEURONS, LIFNode})


_EXACT_SUM = {torch.float32: 2**24, torch.float64: 2**53}  # integers a float sum of 0/1 values holds exactly


def _binary_spikes(module: nn.Module, flat: Tensor) -> bool:
    """True when ``flat`` (steps, n) holds only 0 and 1, known from the neuron and not from the values:
    a LIF, IF or PLIF whose surrogate spikes (a Heaviside forward), and rows short enough that a sum in
    the tensor's float type is an exact integer."""
    bound = _EXACT_SUM.get(flat.dtype)
    surrogate = getattr(module, "surrogate_function", None)
    return (bound is not None and flat.shape[1] < bound and type(module) in _BINARY_NEURONS
            and getattr(surrogate, "spiking", False) is True)


def _is_spikingjelly_neuron(module: nn.Module) -> bool:
    """A spikingjelly neuron, or a subclass of one: some class of its MRO lives in spikingjelly's
    ``neuron`` package (``BaseNode``, ``SimpleBaseNode``, the PSN, DSR, ILC, non-spiking ... families)."""
    return any(c.__module__ == _SJ_NEURON_PACKAGE or c.__module__.startswith(_SJ_NEURON_PACKAGE + ".")
               for c in type(module).__mro__)


_SJ_NEURON_PACKAGE = sj_neuron.__name__  # spikingjelly.activation_based.neuron


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


class LayerTally:
    """Running counts of one layer (over one diffusion step or a whole forward).

    Integer counts are summed as they come (``totals``); data-dependent counts are 0-dim device
    tensors kept in ``pending`` until :meth:`LayerCounter.finish` reads them all at once. A plain
    slotted class: a replayed DiT step makes one per layer (~45), a dataclass's default factories
    cost about 3x as much.
    """

    __slots__ = ("kind", "totals", "pending", "spikes_per_step", "steps", "upstream")

    def __init__(self, kind: str, totals: dict[str, int] | None = None) -> None:
        self.kind = kind
        self.totals: dict[str, int] = {} if totals is None else totals
        self.pending: dict[str, list[Tensor]] = {}
        self.spikes_per_step: list[Any] = []  # neuron layers: per spiking step
        self.steps = 0  # neuron layers: spiking steps run
        self.upstream: dict[str | None, int] = defaultdict(int)  # dense MACs by upstream neuron

    def add(self, counts: Counts) -> None:
        totals = self.totals
        for column, value in counts.items():
            if isinstance(value, Tensor):
                self.pending.setdefault(column, []).append(value)
            else:
                totals[column] = totals.get(column, 0) + value


class _Entry:
    """Upstream key of the dense MACs counted before any neuron inside a recorded call has run: at a
    replay, the counter's last neuron at the call."""

    def __repr__(self) -> str:
        return "<entry>"


_ENTRY = _Entry()


@dataclass
class _Recording:
    """What one call of a reusable module counted: per layer its summed counts and its dense MACs by
    upstream neuron (a neuron inside the call, or :data:`_ENTRY`), layers (neurons too) in first-use order."""

    key: Any
    layers: dict[str, list[Any]] = field(default_factory=dict)  # layer -> [counts, {upstream key: dense MACs}]
    unsupported: dict[tuple[str, str], int] = field(default_factory=dict)  # (op, layer) -> times
    tainted: bool = False  # something depended on values: never reuse
    last: Any = _ENTRY  # upstream key now: _ENTRY until a neuron inside the call has run, then its name
    spikes: list[weakref.ref] = field(default_factory=list)  # spike tensors made during the call

    def add(self, name: str, counts: Counts, dense: int) -> None:
        """Add one op's counts to layer ``name``; its ``dense`` MACs go to the current upstream key."""
        entry = self.layers.get(name)
        if entry is None:
            entry = self.layers[name] = [{}, {}]
        totals = entry[0]
        for column, value in counts.items():
            if isinstance(value, Tensor):
                self.tainted = True
                return
            totals[column] = totals.get(column, 0) + value
        if dense:
            ups = entry[1]
            ups[self.last] = ups.get(self.last, 0) + dense

    def add_recorded(self, name: str, counts: Counts, ups: dict[Any, int]) -> None:
        """Add a nested recording's layer (its upstream keys relative to that call)."""
        entry = self.layers.get(name)
        if entry is None:
            entry = self.layers[name] = [{}, {}]
        totals = entry[0]
        for column, value in counts.items():
            totals[column] = totals.get(column, 0) + value
        mine = entry[1]
        for upstream, dense in ups.items():
            key = self.last if upstream is _ENTRY else upstream
            mine[key] = mine.get(key, 0) + dense

    def neuron(self, name: str) -> None:
        """A neuron layer ran (counted live at every call): keep its place in the layer order."""
        if name not in self.layers:
            self.layers[name] = [{}, {}]
        self.last = name


# Ops whose result feeds values into Python or whose output shape depends on data: a module that
# runs one of them is counted op by op at every call (see the module docstring).
VALUE_DEPENDENT: frozenset[str] = frozenset({
    "_local_scalar_dense", "item", "is_nonzero", "equal", "allclose", "nonzero", "nonzero_static", "argwhere",
    "masked_select", "masked_scatter", "unique", "_unique", "_unique2", "unique_consecutive", "unique_dim",
    "unique_dim_consecutive", "repeat_interleave", "bincount", "histc", "multinomial",
})
_NOT_REUSED = object()  # cache value of a signature whose recording was tainted

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
            spiking blocks too while their neurons count every call (see the module docstring);
            ``False`` counts every call op by op.

    Raises:
        UnknownNeuronError: at construction, for a spikingjelly neuron of an unknown type.
    """

    def __init__(
        self, model: nn.Module, strict: bool = False, neuron_types: tuple[type[nn.Module], ...] = (),
        reuse: bool = True,
    ) -> None:
        self.model = model
        self.strict = strict
        self.reuse = reuse
        self.neuron_types = KNOWN_NEURONS + tuple(neuron_types)
        modules = list(model.named_modules())
        self.names: dict[int, str] = {id(m): (name or ROOT) for name, m in modules}
        self.kinds: dict[str, str] = {(name or ROOT): type(m).__name__ for name, m in modules}
        for name, module in modules:
            if _is_spikingjelly_neuron(module) and not isinstance(module, self.neuron_types):
                raise UnknownNeuronError(
                    f"{name}: neuron type {type(module).__name__} has no cost model; "
                    f"known: {', '.join(t.__name__ for t in self.neuron_types)} (pass neuron_types= to add one)"
                )
        self.kinds[OUTSIDE] = "outside model"
        self.in_spiking_block = _spiking_block_members(modules, self.neuron_types)
        self.blocks = spiking_blocks(model, self.neuron_types, modules)
        self.has_neurons = any(isinstance(m, self.neuron_types) for _, m in modules)
        if self.has_neurons:
            load_neuron_kernels_quietly()
        # What the hooks do per module, decided once: count whole (neurons, WKV), maybe reuse, or just name.
        self._action: dict[int, int] = {}
        for _, m in modules:
            if isinstance(m, self.neuron_types):
                self._action[id(m)] = _NEURON
            elif isinstance(m, WKV):
                self._action[id(m)] = _WKV
            elif reuse:
                self._action[id(m)] = _REUSABLE
            else:
                self._action[id(m)] = _NAME
        self._stack: list[str] = []
        # Per running named module: (what its pre-hook did, a paused dispatch mode to resume or None).
        self._frames: list[tuple[int, contextlib.AbstractContextManager[Any] | None]] = []
        self._recorders: list[_Recording] = []  # recordings of the reusable modules now running
        self._cache: dict[Any, Any] = {}  # (module id, input signature) -> _Recording or _NOT_REUSED
        self._signatures: dict[int, int] = defaultdict(int)  # module id -> signatures cached
        self._replaying = 0  # > 0 inside a module whose counts were reused: its children do nothing
        # Inside a replayed module its descendants' hooks would do nothing (but a neuron's): they are taken
        # off for the call (torch then calls those modules without its hook machinery, ~20 us a call).
        self._quiet: dict[int, list[dict[str, Any]]] = {}  # module id -> __dict__ of descendants to silence
        self._silenced: list[list[tuple[dict[str, Any], Any, Any]]] = []  # per running replay: (module, pre, post)
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
            self._handles.append(module.register_forward_pre_hook(self._pre_hook, with_kwargs=True))
            self._handles.append(module.register_forward_hook(self._post_hook, with_kwargs=True, always_call=True))
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        while self._frames:  # a forward that raised inside a paused module
            _, paused = self._frames.pop()
            if paused is not None:
                paused.__exit__(None, None, None)
        while self._silenced:
            _restore_hooks(self._silenced.pop())
        self._mode.__exit__(*exc)
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._stack.clear()
        self._recorders.clear()
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
        name = self.names[id(module)]
        self._stack.append(name)
        if action == _NAME:
            self._frames.append((_NAME, None))
        elif action == _REUSABLE:
            self._enter_reusable(module, args, kwargs)
        else:  # neurons and WKV: counted whole, their own ops paused
            self._frames.append((action, self._pause()))
            if action == _WKV:
                self._add(name, wkv_counts(args[2]))

    def _enter_reusable(self, module: nn.Module, args: Any, kwargs: Any) -> None:
        signature = _signature(args, kwargs, self._spike_test)
        if signature is None:  # spikes or something we cannot key on: count op by op
            self._frames.append((_NAME, None))
            return
        key = (id(module), signature, module.training, torch.is_grad_enabled(), torch.is_autocast_enabled())
        recording = self._cache.get(key)
        if recording is None:
            if self._signatures[id(module)] >= _MAX_SIGNATURES:
                self._frames.append((_NAME, None))
                return
            self._recorders.append(_Recording(key))
            self._frames.append((_RECORD, None))
        elif recording is _NOT_REUSED:
            self._frames.append((_NAME, None))
        else:
            self._replay(recording)
            self._replaying = 1
            self._silenced.append(self._silence(module))
            self._frames.append((_REPLAY, self._pause()))

    def _post_hook(self, module: nn.Module, args: Any, kwargs: Any, out: Any) -> None:
        if self._replaying > 1:
            self._replaying -= 1
            if self._action.get(id(module)) == _NEURON and isinstance(out, Tensor):
                self._count_neuron(self.names[id(module)], module, out)  # the replay paused the mode
            return
        if id(module) not in self._action or not self._frames:
            return
        action, paused = self._frames.pop()
        if action == _RECORD:
            recording = self._recorders.pop()
            # A call that raised (torch runs always_call hooks while handling the exception) recorded
            # only part of its ops: never reuse it.
            failed = sys.exc_info()[0] is not None
            # A spike tensor made inside and still alive (the output, Python state) would reach later ops
            # as spikes, which a replay (mode paused) never marks.
            escaped = any(ref() is not None for ref in recording.spikes)
            recording.spikes = []
            self._cache[recording.key] = _NOT_REUSED if recording.tainted or failed or escaped else recording
            self._signatures[id(module)] += 1
        elif action == _REPLAY:
            self._replaying = 0
            _restore_hooks(self._silenced.pop())
        elif action == _NEURON and isinstance(out, Tensor):
            self._count_neuron(self._stack[-1], module, out)  # while paused: its own ops go uncounted
        if paused is not None:
            paused.__exit__(None, None, None)
        if self._stack:
            self._stack.pop()

    def _silence(self, module: nn.Module) -> list[tuple[dict[str, Any], Any, Any]]:
        """Take the counter's hooks off ``module``'s descendants (not its neurons, which count in a replay)
        that carry no other forward hook; returns what :func:`_restore_hooks` puts back."""
        quiet = self._quiet.get(id(module))
        if quiet is None:  # the descendants' attribute dicts: hooks are set there, not through nn.Module.__setattr__
            quiet = self._quiet[id(module)] = [
                m.__dict__ for m in module.modules() if m is not module and self._action.get(id(m)) != _NEURON]
        saved = []
        for attrs in quiet:
            pre, post = attrs["_forward_pre_hooks"], attrs["_forward_hooks"]
            if len(pre) == 1 and len(post) == 1:  # ours only (a user's hook keeps the module hooked)
                saved.append((attrs, pre, post))
                attrs["_forward_pre_hooks"], attrs["_forward_hooks"] = OrderedDict(), OrderedDict()
        return saved

    def _count_neuron(self, name: str, module: nn.Module, out: Tensor) -> None:
        multi = getattr(module, "step_mode", "s") == "m"
        steps = out.shape[0] if multi else 1
        flat = out.reshape(steps, -1)  # (steps, B x neurons)
        if _binary_spikes(module, flat):
            per_step = flat.sum(dim=1)  # (steps,) 0/1 spikes: the float sum is the exact count, ~20x faster
        else:
            per_step = torch.count_nonzero(flat, dim=1)  # (steps,) on device
        tally = self._tally(name)
        tally.add({"neuron_updates": out.numel()})
        tally.spikes_per_step.append(per_step)  # the spikes column is their sum, taken in finish()
        tally.steps += steps
        self._mark_spikes(out)
        self._last_neuron = name
        for recording in self._recorders:
            recording.neuron(name)

    # ---- ops ---------------------------------------------------------------------
    def _tally(self, name: str) -> LayerTally:
        if self._current is None:
            self.begin_step()
        tally = self._current.get(name)
        if tally is None:
            tally = self._current[name] = LayerTally(kind=self.kinds.get(name, "?"))
        return tally

    def _add(self, name: str, counts: Counts, dense: int = 0) -> None:
        """Add one op's (or one reused call's) counts to layer ``name``; ``dense`` MACs go upstream."""
        tally = self._tally(name)
        tally.add(counts)
        if dense:
            tally.upstream[self._last_neuron] += dense
        for recording in self._recorders:
            recording.add(name, counts, dense)

    def _replay(self, recording: _Recording) -> None:
        last, recorders, upstream_of = self._last_neuron, self._recorders, _ENTRY
        if self._current is None and recording.layers:  # a call that counted nothing opens no step
            self.begin_step()
        current, kinds = self._current, self.kinds
        for name, (counts, ups) in recording.layers.items():  # ints only: a recording with tensors is tainted
            tally = current.get(name)  # neuron layers too, in their op-by-op place; they count when they run
            if tally is None:  # the common case (a whole model call replayed): start from a copy
                tally = current[name] = LayerTally(kinds.get(name, "?"), dict(counts))
            else:
                totals = tally.totals
                for column, value in counts.items():
                    totals[column] = totals.get(column, 0) + value
            if ups:
                upstream = tally.upstream
                for key, dense in ups.items():
                    upstream[last if key is upstream_of else key] += dense
            for outer in recorders:
                outer.add_recorded(name, counts, ups)
        for (op, name), times in recording.unsupported.items():
            self._note_unsupported(op, name, times)

    def _note_unsupported(self, op: str, name: str, times: int = 1) -> None:
        count, layers = self._unsupported.get(op, (0, {}))
        layers[name] = None
        self._unsupported[op] = (count + times, layers)
        for recording in self._recorders:
            recording.unsupported[(op, name)] = recording.unsupported.get((op, name), 0) + times

    def _is_spike(self, x: Any) -> bool:
        ref = self._spikes.get(id(x))
        return ref is not None and ref() is x

    def _mark_spikes(self, t: Tensor) -> None:
        key = id(t)
        spikes = self._spikes
        ref = spikes[key] = weakref.ref(t, lambda _ref, key=key: spikes.pop(key, None))
        for recording in self._recorders:
            recording.spikes.append(ref)

    def _plan_of(self, func: Any) -> tuple[int, Any]:
        rule = RULES.get(func)
        if rule is not None:
            return _RULE, rule
        base = op_base_name(func)
        if base in SPIKE_PRESERVING:
            return _PRESERVING, None
        if base in VALUE_DEPENDENT:
            return _VALUE_DEPENDENT, None
        if base in FREE_OPS:
            return _FREE, None
        return _UNSUPPORTED, None

    def _check_spike_independent(self, rule: Any, args: Any, kwargs: Any, out: Any, counts: Counts) -> None:
        """Taint the running recordings if a rule's integer counts depend on which inputs are spikes
        (rules put spike-dependent counts in tensors, which taint anyway; this does not rely on it)."""
        if any(isinstance(v, Tensor) for v in counts.values()):
            return  # data-dependent: _Recording.add taints
        if not any(self._is_spike(a) for a in _tensors(args, kwargs)):
            return
        if rule(args, kwargs, out, _never) != counts:
            for recording in self._recorders:
                recording.tainted = True

    def _on_op(self, func: Any, args: Any, kwargs: Any, out: Any) -> None:
        plan = self._plan.get(func)
        if plan is None:
            plan = self._plan[func] = self._plan_of(func)
        what, rule = plan
        if what == _RULE:
            counts = rule(args, kwargs, out, self._spike_test)
            if self._recorders and self._spikes:
                self._check_spike_independent(rule, args, kwargs, out, counts)
            dense = counts.get("dense_macs", 0)
            self._add(self._stack[-1] if self._stack else OUTSIDE, counts, int(dense) if dense else 0)
            return
        if what == _PRESERVING:
            if self.has_neurons and self._spikes:
                inputs = _tensors(args, kwargs)
                if inputs and all(self._is_spike(a) for a in inputs):
                    for o in _tensors(out):
                        self._mark_spikes(o)  # recorded calls check that these die inside them
            return
        if what == _FREE:
            return
        if what == _VALUE_DEPENDENT:
            for recording in self._recorders:
                recording.tainted = True
            if op_base_name(func) in FREE_OPS:
                return
        name = self._stack[-1] if self._stack else OUTSIDE
        if self.strict:
            raise UnsupportedOpError(f"no counting rule for {func} (in layer {name}); strict mode")
        self._note_unsupported(str(func), name)

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
                for values in tally.pending.values():
                    pending.extend(values)
                pending.extend(tally.spikes_per_step)
        resolved = _resolve(pending)
        zero = dict.fromkeys(COLUMNS, 0)
        steps = []
        for meta, layers in self._steps:
            out_layers = {}
            for name, tally in layers.items():
                record: dict[str, Any] = {"kind": tally.kind, **zero, **tally.totals}
                for column, values in tally.pending.items():
                    record[column] = record.get(column, 0) + sum(map(resolved, values))
                per_call = [resolved(v) for v in tally.spikes_per_step]
                if per_call:
                    record["spikes"] += sum(sum(c) for c in per_call)
                record["spikes_per_step"] = _sum_by_step(per_call)
                record["steps"] = tally.steps
                record["upstream"] = dict(tally.upstream)
                out_layers[name] = record
            steps.append((meta, out_layers))
        unsupported = [UnsupportedOp(op=op, count=c, layers=list(ls)) for op, (c, ls) in self._unsupported.items()]
        return steps, unsupported


_RULE, _PRESERVING, _FREE, _UNSUPPORTED, _VALUE_DEPENDENT = range(5)
# What a module's hooks do: name it, count it whole (neuron / WKV), or maybe reuse its counts.
_NAME, _NEURON, _WKV, _REUSABLE, _RECORD, _REPLAY = range(6)
_MAX_SIGNATURES = 8  # distinct input signatures cached per module; past that, counted op by op


def _signature(args: Any, kwargs: Any, spike: Callable[[Any], bool]) -> tuple[Any, ...] | None:
    """A hashable key of a module call's inputs: tensors by shape, dtype, stride and device, plain
    values by type and value; ``None`` if an input is spikes or cannot be keyed."""
    parts: list[Any] = []
    for value in (*args, *(kwargs.items() if kwargs else ())):
        part = _key_of(value, spike, 0)
        if part is None:
            return None
        parts.append(part)
    return tuple(parts)


def _key_of(value: Any, spike: Callable[[Any], bool], depth: int) -> Any:
    if isinstance(value, Tensor):
        if spike(value) or value.layout is not torch.strided:
            return None
        return (value.shape, value.dtype, value.device, value.stride(), value.requires_grad)
    if value is None or isinstance(value, bool | int | float | str):
        return (type(value), value)
    if isinstance(value, tuple | list) and depth < 2:
        parts = [_key_of(v, spike, depth + 1) for v in value]
        return None if any(p is None for p in parts) else (type(value), tuple(parts))
    return None


def _restore_hooks(saved: list[tuple[dict[str, Any], Any, Any]]) -> None:
    """Put back the hooks :meth:`LayerCounter._silence` took off (and keep any registered meanwhile)."""
    for attrs, pre, post in saved:
        added_pre, added_post = attrs["_forward_pre_hooks"], attrs["_forward_hooks"]
        if added_pre:
            pre.update(added_pre)
        if added_post:
            post.update(added_post)
        attrs["_forward_pre_hooks"], attrs["_forward_hooks"] = pre, post


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
    """Move all pending device tensors to host in one go per device; return a lookup.

    0-dim counts are stacked and per-step vectors concatenated, so a long sampling run costs two
    small ops and one copy per device, not an op per count.
    """
    values: dict[int, Any] = {}
    groups: dict[tuple[torch.device, bool], list[Tensor]] = defaultdict(list)
    for t in pending:
        groups[(t.device, t.dim() == 0)].append(t)
    for (_, scalar), tensors in groups.items():
        as_int = [t if t.dtype == torch.int64 else t.to(torch.int64) for t in tensors]
        if scalar:
            for t, v in zip(tensors, torch.stack(as_int).tolist(), strict=True):
                values[id(t)] = v
            continue
        flat = torch.cat([t.reshape(-1) for t in as_int]).tolist()
        offset = 0
        for t in tensors:
            n = t.numel()
            values[id(t)] = flat[offset : offset + n]
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
