"""Reusing the counts of modules called again with the same input signature (LayerCounter(reuse=True)),
neuron-free ones and spiking blocks alike, gives the very same profile as counting every call op by op,
and falls back to op-by-op counting wherever a call depends on values or lets spikes out."""

from __future__ import annotations

import json

import pytest
import torch
from spikingjelly.activation_based import functional
from torch import Tensor, nn

from profiling import rules
from profiling.counter import LayerCounter
from profiling.records import Profile
from profiling.workloads import profile_module, profile_workload
from sdit.config import SDiTConfig
from sdit.models import build_model
from sdit.models.layers import make_lif, run_lif
from sdit.workload import Workload


def _same(a: Profile, b: Profile) -> None:
    """Every column of every layer, step and layer-step, in the same order and of the same type (JSON text)."""
    assert json.dumps(a.to_dict()) == json.dumps(b.to_dict())


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("preset", ["dit-tiny", "sdit-tiny", "sdit-tiny-sd"])
def test_sampling_profiles_are_identical_with_and_without_reuse(preset: str, batch: int) -> None:
    torch.manual_seed(0)
    model = build_model(preset)
    work = Workload.ddim(3, eta=1.0, batch_size=batch, seed=3)
    reused = profile_workload(model, work, name=preset)
    counted = profile_workload(model, work, name=preset, reuse=False)
    _same(reused, counted)
    assert len(reused.steps) == 3 and reused.layer_steps


def _ops_inside_model_by_step(monkeypatch: pytest.MonkeyPatch, preset: str) -> list[int]:
    """aten ops counted op by op inside the model (not the sampler's update), per model call, reuse on."""
    per_step: list[int] = []
    on_op, begin = LayerCounter._on_op, LayerCounter.begin_step

    def counting(self, *args):
        if self._stack:
            per_step[-1] += 1
        return on_op(self, *args)

    def beginning(self, **meta):
        per_step.append(0)
        return begin(self, **meta)

    monkeypatch.setattr(LayerCounter, "_on_op", counting)
    monkeypatch.setattr(LayerCounter, "begin_step", beginning)
    profile_workload(build_model(preset), Workload.ddim(3), name=preset)
    return per_step


def test_a_spiking_model_is_counted_op_by_op_only_at_its_first_call(monkeypatch: pytest.MonkeyPatch) -> None:
    first, *later = _ops_inside_model_by_step(monkeypatch, "sdit-tiny")
    assert first > 50 and later == [0, 0]  # the whole SDiT replayed; only its neurons run counted


def test_the_spike_driven_model_stays_op_by_op(monkeypatch: pytest.MonkeyPatch) -> None:
    first, *later = _ops_inside_model_by_step(monkeypatch, "sdit-tiny-sd")
    # its Linears read spikes (ACs are data): every block counted op by op at every call
    assert later and all(n > 50 for n in later)


def test_a_neuron_free_model_is_counted_op_by_op_only_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"ops": 0}
    on_op = LayerCounter._on_op

    def counting(self, *args):
        calls["ops"] += 1
        return on_op(self, *args)

    monkeypatch.setattr(LayerCounter, "_on_op", counting)
    model = build_model("dit-tiny")
    ops = {}
    for reuse in (True, False):
        calls["ops"] = 0
        profile_workload(model, Workload.ddim(4), name="dit-tiny", reuse=reuse)
        ops[reuse] = calls["ops"]
    # op by op: every model call; reused: the first call and the sampler's updates between calls
    assert ops[True] < ops[False] / 2


class _Branchy(nn.Module):
    """Neuron-free, but its ops depend on a value read into Python (bool of a tensor)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        y = self.lin(x)
        if y.sum() > 0:
            return y * y * 2
        return y


class _Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = _Branchy()

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return self.inner(x) + self.inner(z)[: x.shape[0]]


def test_value_dependent_calls_and_new_shapes_are_counted_op_by_op() -> None:
    torch.manual_seed(0)
    model = _Twice()
    nn.init.constant_(model.inner.lin.weight, 1.0)
    nn.init.zeros_(model.inner.lin.bias)
    x, z = torch.ones(2, 4), -torch.ones(2, 4)  # same signature, other branch
    reused = profile_module(model, (x, z), name="m")
    counted = profile_module(model, (x, z), name="m", reuse=False)
    assert reused.to_dict() == counted.to_dict()
    assert reused.layer("inner").muls == 2 * 2 * 4 / 2  # per image: only the first call squares and doubles
    wider = profile_module(model, (x, torch.ones(3, 4)), name="m")  # a new shape: recorded anew
    assert wider.to_dict() == profile_module(model, (x, torch.ones(3, 4)), name="m", reuse=False).to_dict()
    assert wider.layer("inner.lin").dense_macs == (2 + 3) * 4 * 4 / 2



class _Fragile(nn.Module):
    """Raises half-way while ``fail`` is set (state no input signature sees)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.fail = True

    def forward(self, x: Tensor) -> Tensor:
        y = self.lin(x) * 2
        if self.fail:
            self.fail = False
            raise ValueError("half-way")
        return y + 1


class _Retries(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = _Fragile()

    def forward(self, x: Tensor) -> Tensor:
        try:
            return self.inner(x)
        except ValueError:
            return self.inner(x)


def test_a_call_that_raised_is_not_reused() -> None:
    x = torch.ones(2, 4)
    model = _Retries()
    reused = profile_module(model, (x,), name="m")
    model.inner.fail = True
    assert reused.to_dict() == profile_module(model, (x,), name="m", reuse=False).to_dict()
    assert reused.layer("inner").adds == 4  # per image: the + 1 of the second call, counted


class _SpikeBlock(nn.Module):
    """Linear -> LIF over T = 2; returns the spikes as a view (``leak``) or their sum with the input."""

    def __init__(self, leak: bool) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.lif = make_lif(SDiTConfig())
        self.leak = leak

    def forward(self, x: Tensor) -> Tensor:  # x: (T*B, 4)
        spikes = run_lif(self.lif, self.lin(x), 2)  # (T*B, 4), a view of the LIF's (T, B, 4) output
        return spikes if self.leak else x + spikes


class _TwoCalls(nn.Module):
    """The same block twice per forward, then a Linear that reads what the block returned."""

    def __init__(self, leak: bool) -> None:
        super().__init__()
        self.block = _SpikeBlock(leak)
        self.head = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        y = self.head(self.block(x)) + self.head(self.block(x * 2))
        functional.reset_net(self)
        return y


def _block_ops(monkeypatch: pytest.MonkeyPatch, model: nn.Module, x: Tensor, reuse: bool) -> tuple[Profile, int]:
    """(profile of ``x`` = (T*B, 4), T = 2; aten ops ``block`` runs itself, counted op by op)."""
    calls = {"block": 0}
    on_op = LayerCounter._on_op

    def counting(self, *args):
        calls["block"] += bool(self._stack) and self._stack[-1] == "block"
        return on_op(self, *args)

    with monkeypatch.context() as patch:
        patch.setattr(LayerCounter, "_on_op", counting)
        profile = profile_module(model, (x,), name="m", reuse=reuse, batch_size=x.shape[0] // 2)
    return profile, calls["block"]


@pytest.mark.parametrize("leak", [False, True])
def test_a_spiking_block_is_reused_unless_its_spikes_leave_it(monkeypatch: pytest.MonkeyPatch, leak: bool) -> None:
    torch.manual_seed(0)
    model = _TwoCalls(leak)
    x = torch.randn(2 * 3, 4) * 3  # (T*B, 4), B = 3
    reused, ops_reused = _block_ops(monkeypatch, model, x, reuse=True)
    counted, ops_counted = _block_ops(monkeypatch, model, x, reuse=False)
    _same(reused, counted)
    assert counted.layer("block.lif").spikes > 0
    if leak:  # head reads spikes (ACs): the block's output must be marked as spikes at every call
        assert counted.layer("head").acs > 0
        assert ops_reused == ops_counted
    else:  # the second call replays the first one's counts; its neuron still counts its own spikes
        assert ops_reused == ops_counted // 2
        lin = next(r for r in reused.layer_steps if r.layer == "block.lin")
        # per image: 2 rows x 4 x 4 MACs a call; no neuron's spikes reach either call's input (the spike graph:
        # the block's LIF ran before the second call, but its spikes do not flow into x * 2)
        assert lin.upstream == {"(none)": 64}


def test_a_rule_whose_integer_counts_read_spikes_keeps_the_block_op_by_op(monkeypatch: pytest.MonkeyPatch) -> None:
    def odd_add(args, kwargs, out, spike):  # an integer count that depends on provenance
        return {"adds": out.numel() * (2 if any(spike(a) for a in args) else 1)}

    monkeypatch.setitem(rules.RULES, torch.ops.aten.add.Tensor, odd_add)
    torch.manual_seed(0)
    model = _TwoCalls(leak=False)
    x = torch.randn(2 * 3, 4)
    reused, ops_reused = _block_ops(monkeypatch, model, x, reuse=True)
    counted, ops_counted = _block_ops(monkeypatch, model, x, reuse=False)
    _same(reused, counted)
    assert counted.layer("block").adds == 2 * 24 * 2 / 3  # x + spikes (24 elements) at both calls, doubled, / B
    assert ops_reused == ops_counted  # both calls op by op


@pytest.mark.parametrize("preset", ["dit-tiny", "sdit-tiny"])
def test_a_replay_keeps_user_hooks_and_puts_every_hook_back(preset: str) -> None:
    torch.manual_seed(0)
    model = build_model(preset)
    inner = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]  # replayed inside the model's replay
    seen = []
    handle = inner.register_forward_hook(lambda m, a, out: seen.append(out.shape))
    try:
        reused = profile_workload(model, Workload.ddim(3), name=preset)
    finally:
        handle.remove()
    assert len(seen) == 3  # a user's hook runs at every call, replayed or not
    _same(reused, profile_workload(model, Workload.ddim(3), name=preset, reuse=False))
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())  # the counter's are gone
