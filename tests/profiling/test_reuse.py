"""Reusing the counts of neuron-free modules (LayerCounter(reuse=True)) gives the very same profile as
counting every call op by op, and falls back to op-by-op counting wherever a call depends on values."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from profiling.counter import LayerCounter
from profiling.records import Workload
from profiling.workloads import profile_module, profile_workload
from sdit.models import build_model


@pytest.mark.parametrize("preset", ["dit-tiny", "sdit-tiny", "sdit-tiny-sd"])
def test_sampling_profiles_are_identical_with_and_without_reuse(preset: str) -> None:
    torch.manual_seed(0)
    model = build_model(preset)
    work = Workload.ddim(3, eta=1.0, batch_size=2, seed=3)
    reused = profile_workload(model, work, name=preset)
    counted = profile_workload(model, work, name=preset, reuse=False)
    assert reused.to_dict() == counted.to_dict()


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
