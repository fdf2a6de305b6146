"""Reuse of recorded counts: a module called again with the same input signature replays them.

A module called with no spike input costs the same ops every time it is called with the same input
signature (shapes, dtypes, strides, devices, plain argument values, train/grad/autocast state), except
for what its neurons do. :class:`Reuse` records its first call with that signature (a
:class:`Recording`: per layer its counts and its dense MACs by upstream neuron); later calls add the
recorded counts while the counter's dispatch mode is paused and the hooks of the module's descendants
are taken off, so a DiT's sampling run is counted op by op only at its first step. A module that holds
neurons (a spiking block, an SDiT) is reused the same way while its neurons still run and are counted
at every call; the recording keeps, for each dense MAC, which neuron ran last before it (one inside
the module, or :data:`ENTRY`, "the nearest upstream neuron of the call's inputs", resolved at each replay),
so the ``upstream`` attribution is the one op-by-op counting gives.

A recording is never reused if anything in it depended on values (the counter taints it): a count a
rule returned as a tensor (ACs of a spike input: the spike-driven SDiT stays op by op), a rule whose
integer counts change when its spike inputs are taken for real values, a value read into Python
(:data:`profiling.rules.VALUE_DEPENDENT`), an op whose output shape depends on data, a call that
raised, or a spike tensor made during the call that is still alive when it returns (its output, or
one kept in Python state: later ops would see spikes that a replay does not mark). What the guard
cannot see is a value read through ``.tolist()`` / ``.numpy()`` or Python state that changes between
calls; for such a module the counter takes ``reuse=False``.
"""

from __future__ import annotations

import sys
import weakref
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from profiling.rules import Counts
from profiling.tally import LayerTally

MAX_SIGNATURES = 8  # distinct input signatures cached per module; past that, counted op by op
OP_BY_OP, RECORD, REPLAY = "op by op", "record", "replay"  # what Reuse.enter decides for a call
_NOT_REUSED = object()  # cache value of a signature whose recording was tainted
Hooks = list[tuple[dict[str, Any], Any, Any]]  # (module __dict__, its pre hooks, its post hooks)


class _Entry:
    """Upstream key of the dense MACs whose nearest upstream neuron ran before a recorded call (reached its
    ops through the call's inputs): at a replay, the nearest upstream neuron of that call's inputs."""

    def __repr__(self) -> str:
        return "<entry>"


ENTRY = _Entry()


@dataclass
class Recording:
    """What one call of a reusable module counted: per layer its summed counts and its dense MACs by
    upstream neuron (a neuron inside the call, or :data:`ENTRY`), layers (neurons too) in first-use order."""

    key: Any
    layers: dict[str, list[Any]] = field(default_factory=dict)  # layer -> [counts, {upstream key: dense MACs}]
    unsupported: dict[tuple[str, str], int] = field(default_factory=dict)  # (op, layer) -> times
    tainted: bool = False  # something depended on values: never reuse
    spikes: list[weakref.ref] = field(default_factory=list)  # spike tensors made during the call
    start: int = 0  # the counter's neuron calls when the call began: a source from an earlier call is ENTRY

    def key_of(self, source: tuple[int, str] | None) -> Any:
        """The upstream key of ``source`` (call number, neuron) relative to this call."""
        if source is None:
            return None
        return source[1] if source[0] >= self.start else ENTRY

    def add(self, name: str, counts: Counts, dense: int, source: tuple[int, str] | None = None) -> None:
        """Add one op's counts to layer ``name``; its ``dense`` MACs go to the key of ``source``, the nearest
        upstream neuron of its inputs."""
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
            key = self.key_of(source)
            ups[key] = ups.get(key, 0) + dense

    def add_recorded(self, name: str, counts: Counts, ups: dict[Any, int], entry_key: Any = None) -> None:
        """Add a nested recording's layer (its upstream keys relative to that call; its :data:`ENTRY` is
        ``entry_key`` here)."""
        entry = self.layers.get(name)
        if entry is None:
            entry = self.layers[name] = [{}, {}]
        totals = entry[0]
        for column, value in counts.items():
            totals[column] = totals.get(column, 0) + value
        mine = entry[1]
        for upstream, dense in ups.items():
            key = entry_key if upstream is ENTRY else upstream
            mine[key] = mine.get(key, 0) + dense

    def neuron(self, name: str) -> None:
        """A neuron layer ran (counted live at every call): keep its place in the layer order."""
        if name not in self.layers:
            self.layers[name] = [{}, {}]


class Reuse:
    """The recordings of reusable modules: which are running, which are cached, whose hooks are off.

    Args:
        counted_live: Whether a module keeps its hooks inside a replay (neurons: they count every call).
    """

    def __init__(self, counted_live: Callable[[nn.Module], bool]) -> None:
        self.counted_live = counted_live
        self.recorders: list[Recording] = []  # recordings of the reusable modules now running, outermost first
        self._cache: dict[Any, Any] = {}  # (module id, input signature) -> Recording or _NOT_REUSED
        self._signatures: dict[int, int] = defaultdict(int)  # module id -> signatures cached
        # Inside a replayed module its descendants' hooks would do nothing (but a neuron's): they are taken
        # off for the call (torch then calls those modules without its hook machinery, ~20 us a call).
        self._quiet: dict[int, list[dict[str, Any]]] = {}  # module id -> __dict__ of descendants to silence
        self._silenced: list[Hooks] = []  # per running replay

    def enter(self, module: nn.Module, args: Any, kwargs: Any,
              spike: Callable[[Any], bool]) -> tuple[str, Recording | None]:
        """Decide a call of ``module``: count it :data:`OP_BY_OP`, :data:`RECORD` it (a recording now
        runs), or :data:`REPLAY` the returned recording (the descendants' hooks are now off)."""
        signature = _signature(args, kwargs, spike)
        if signature is None:  # spikes or something we cannot key on: count op by op
            return OP_BY_OP, None
        key = (id(module), signature, module.training, torch.is_grad_enabled(), torch.is_autocast_enabled())
        recording = self._cache.get(key)
        if recording is None:
            if self._signatures[id(module)] >= MAX_SIGNATURES:
                return OP_BY_OP, None
            self.recorders.append(Recording(key))
            return RECORD, None
        if recording is _NOT_REUSED:
            return OP_BY_OP, None
        self._silenced.append(self._silence(module))
        return REPLAY, recording

    def end_record(self, module: nn.Module) -> None:
        """The innermost recorded call returned: cache its recording, or mark its signature not reused."""
        recording = self.recorders.pop()
        # A call that raised (torch runs always_call hooks while handling the exception) recorded
        # only part of its ops: never reuse it.
        failed = sys.exc_info()[0] is not None
        # A spike tensor made inside and still alive (the output, Python state) would reach later ops
        # as spikes, which a replay (mode paused) never marks.
        escaped = any(ref() is not None for ref in recording.spikes)
        recording.spikes = []
        self._cache[recording.key] = _NOT_REUSED if recording.tainted or failed or escaped else recording
        self._signatures[id(module)] += 1

    def end_replay(self) -> None:
        """The innermost replayed call returned: put its descendants' hooks back."""
        _restore_hooks(self._silenced.pop())

    def close(self) -> None:
        """Put back every hook still off and drop the running recordings (a forward that raised)."""
        while self._silenced:
            _restore_hooks(self._silenced.pop())
        self.recorders.clear()

    def taint(self) -> None:
        """Something in the running calls depended on values: none of them is reused."""
        for recording in self.recorders:
            recording.tainted = True

    def replay(self, recording: Recording, current: dict[str, LayerTally], kinds: dict[str, str],
               entry: tuple[int, str] | None) -> None:
        """Add ``recording``'s counts to the step's tallies ``current`` and to the running recordings;
        its :data:`ENTRY` MACs go to ``entry`` (call number, name), the nearest upstream neuron of the call's
        inputs."""
        entry_name = None if entry is None else entry[1]
        recorders = self.recorders
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
                    upstream[entry_name if key is ENTRY else key] += dense
            for outer in recorders:
                outer.add_recorded(name, counts, ups, outer.key_of(entry))

    def _silence(self, module: nn.Module) -> Hooks:
        """Take the counter's hooks off ``module``'s descendants (not those counted live) that carry no
        other forward hook; returns what :func:`_restore_hooks` puts back."""
        quiet = self._quiet.get(id(module))
        if quiet is None:  # the descendants' attribute dicts: hooks are set there, not through nn.Module.__setattr__
            quiet = self._quiet[id(module)] = [
                m.__dict__ for m in module.modules() if m is not module and not self.counted_live(m)]
        saved = []
        for attrs in quiet:
            pre, post = attrs["_forward_pre_hooks"], attrs["_forward_hooks"]
            if len(pre) == 1 and len(post) == 1:  # ours only (a user's hook keeps the module hooked)
                saved.append((attrs, pre, post))
                attrs["_forward_pre_hooks"], attrs["_forward_hooks"] = OrderedDict(), OrderedDict()
        return saved


def _restore_hooks(saved: Hooks) -> None:
    """Put back the hooks :meth:`Reuse._silence` took off (and keep any registered meanwhile)."""
    for attrs, pre, post in saved:
        added_pre, added_post = attrs["_forward_pre_hooks"], attrs["_forward_hooks"]
        if added_pre:
            pre.update(added_pre)
        if added_post:
            post.update(added_post)
        attrs["_forward_pre_hooks"], attrs["_forward_hooks"] = pre, post


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
