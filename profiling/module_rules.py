"""Module rules: modules counted whole, module type -> counts, as small pure functions.

The counter (:mod:`profiling.counter`) counts most modules op by op. The modules of
:data:`MODULE_RULES` are counted whole instead, with the dispatch mode paused inside them, by a rule
``(module, args, out) -> counts`` called when the module returns: the WKV operator, a closed form
over its input shape, whatever implementation runs.

Spiking neurons are counted whole too, as their declaration says (:mod:`profiling.neurons`): one
membrane update per neuron per step; their spikes, counted per step on the device by
:func:`spikes_per_step`, go to the ``spikes`` column when the counter finishes. A spikingjelly neuron
of an undeclared type has no cost model: the counter refuses the model (:func:`is_spikingjelly_neuron`
finds them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from spikingjelly.activation_based import neuron as sj_neuron
from torch import Tensor, nn

from profiling.rules import Counts
from sdit.models.lif import LIFNode
from sdit.models.wkv import WKV

ModuleRule = Callable[[nn.Module, tuple[Any, ...], Any], Counts]
Named = list[tuple[str, nn.Module]]
IsNeuron = Callable[[nn.Module], bool]

# spikingjelly's neuron classes declared in profiling.neurons: one membrane update per neuron per step.
KNOWN_NEURONS: tuple[type[nn.Module], ...] = (sj_neuron.LIFNode, sj_neuron.IFNode, sj_neuron.ParametricLIFNode)
# Exactly these classes (not subclasses, which may change the output) fire a Heaviside of the membrane.
_BINARY_NEURONS = frozenset({*KNOWN_NEURONS, LIFNode})
_EXACT_SUM = {torch.float32: 2**24, torch.float64: 2**53}  # integers a float sum of 0/1 values holds exactly
_SJ_NEURON_PACKAGE = sj_neuron.__name__  # spikingjelly.activation_based.neuron


def wkv_counts(k: Tensor) -> Counts:
    """Cost of the stable WKV recurrence per (batch, token, channel) element.

    Per element: 4 exponentials (two for the output, two for the state update),
    7 multiplications/divisions, 10 additions/subtractions, 2 maxima.
    """
    elements = k.numel()
    return {"exp": 4 * elements, "muls": 7 * elements, "adds": 10 * elements, "other": 2 * elements}


def wkv_rule(module: nn.Module, args: tuple[Any, ...], out: Any) -> Counts:
    """``WKV(time_decay, time_first, k, v)``: :func:`wkv_counts` of ``k``."""
    return wkv_counts(args[2])


MODULE_RULES: dict[type[nn.Module], ModuleRule] = {WKV: wkv_rule}


def module_rule(module: nn.Module) -> ModuleRule | None:
    """The rule of ``module``'s class or its nearest ancestor class in :data:`MODULE_RULES`, or ``None``."""
    for cls in type(module).__mro__:
        rule = MODULE_RULES.get(cls)
        if rule is not None:
            return rule
    return None


def spikes_per_step(module: nn.Module, train: Tensor, time_axis: int | None) -> Tensor:
    """A neuron's spikes per spiking step, a (steps,) tensor on ``train``'s device (no synchronisation);
    ``time_axis`` the axis of T in its spike train ``train``, ``None`` for one step."""
    if time_axis is None:
        flat = train.reshape(1, -1)
    else:
        flat = train.movedim(time_axis, 0).reshape(train.shape[time_axis], -1)  # (steps, B x neurons)
    if binary_spikes(module, flat):
        return flat.sum(dim=1)  # (steps,) 0/1 spikes: the float sum is the exact count, ~20x faster
    return torch.count_nonzero(flat, dim=1)  # (steps,)


def binary_spikes(module: nn.Module, flat: Tensor) -> bool:
    """True when ``flat`` (steps, n) holds only 0 and 1, known from the neuron and not from the values:
    a LIF, IF or PLIF whose surrogate spikes (a Heaviside forward), and rows short enough that a sum in
    the tensor's float type is an exact integer."""
    bound = _EXACT_SUM.get(flat.dtype)
    surrogate = getattr(module, "surrogate_function", None)
    return (bound is not None and flat.shape[1] < bound and type(module) in _BINARY_NEURONS
            and getattr(surrogate, "spiking", False) is True)


def is_spikingjelly_neuron(module: nn.Module) -> bool:
    """A spikingjelly neuron, or a subclass of one: some class of its MRO lives in spikingjelly's
    ``neuron`` package (``BaseNode``, ``SimpleBaseNode``, the PSN, DSR, ILC, non-spiking ... families)."""
    return any(c.__module__ == _SJ_NEURON_PACKAGE or c.__module__.startswith(_SJ_NEURON_PACKAGE + ".")
               for c in type(module).__mro__)


def _neuron_holders(modules: Named, is_neuron: IsNeuron) -> set[str]:
    """Names (below the root) of the modules that hold a neuron: every neuron and each of its ancestors."""
    holders: set[str] = set()
    for name, m in modules:
        if name and is_neuron(m):
            parts = name.split(".")
            holders.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return holders


def spiking_blocks(model: nn.Module, is_neuron: IsNeuron, modules: Named | None = None) -> dict[str, str]:
    """Module name -> the spiking block holding it: its outermost ancestor-or-self below the root
    that holds a neuron, is not a ModuleList / ModuleDict (those only group blocks) and does not hold
    every neuron of the model (that is the model itself, or a wrapper of it: ``nn.Sequential(net)`` or a
    user's time loop around ``net`` has the blocks of ``net``)."""
    named = list(model.named_modules()) if modules is None else modules
    by_name = dict(named)
    neurons = [n for n, m in named if n and is_neuron(m)]
    holders = {n for n in _neuron_holders(named, is_neuron)
               if not isinstance(by_name[n], nn.ModuleList | nn.ModuleDict)
               and (n in neurons or not all(u == n or u.startswith(n + ".") for u in neurons))}
    out = {}
    for name in by_name:
        parts = name.split(".") if name else []
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in holders:
                out[name] = prefix
                break
    return out


def spiking_block_members(modules: Named, is_neuron: IsNeuron) -> set[str]:
    """Names of modules inside a spiking block (:func:`spiking_blocks`), but for a neuron that is a block alone."""
    by_name = dict(modules)
    return {name for name, block in spiking_blocks(None, is_neuron, modules).items()
            if name != block or not is_neuron(by_name[name])}
