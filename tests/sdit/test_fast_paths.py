"""The fast paths agree with the slow references in value and gradient."""

from __future__ import annotations

import functools

import pytest
import torch

from sdit.models import build_model
from sdit.models import wkv as wkv_module
from sdit.models.layers import relu_square
from sdit.models.wkv import WKVFunction, wkv, wkv_backend, wkv_chunked, wkv_direct, wkv_python, wkv_reference
from sdit.models.wkv_ext import wkv_cpu

# The implementations of the fast path: the tensor-op token loop, the C++ kernel, the chunked form.
IMPLS = pytest.mark.parametrize("fast_wkv", [wkv_python, wkv_cpu, functools.partial(wkv_chunked, chunk=8)],
                                ids=["python", "cpp", "chunked8"])


def _inputs(batch: int, tokens: int, dim: int, k_scale: float = 1.0, dtype=torch.float32, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    time_decay = torch.randn(dim, generator=g, dtype=dtype) * 2 - 1
    time_first = torch.randn(dim, generator=g, dtype=dtype)
    k = torch.randn(batch, tokens, dim, generator=g, dtype=dtype) * k_scale
    v = torch.randn(batch, tokens, dim, generator=g, dtype=dtype)
    return time_decay, time_first, k, v


def _value_and_grads(fn, args, grad_out):
    leaves = [a.detach().clone().requires_grad_() for a in args]
    out = fn(*leaves)
    (out * grad_out).sum().backward()
    return out.detach(), [leaf.grad for leaf in leaves]


def _rel(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.double() - expected.double()).norm() / expected.double().norm()).item()


@pytest.mark.parametrize("k_scale", [1.0, 30.0])
@IMPLS
def test_wkv_matches_reference_in_value_and_gradient(k_scale: float, fast_wkv) -> None:
    args = _inputs(3, 41, 16, k_scale=k_scale)
    grad_out = torch.randn(3, 41, 16, generator=torch.Generator().manual_seed(2))
    fast, fast_grads = _value_and_grads(fast_wkv, args, grad_out)
    slow, slow_grads = _value_and_grads(wkv_reference, args, grad_out)
    # Ground truth: the reference recurrence in float64 (the literal formula overflows at k x 30).
    truth, truth_grads = _value_and_grads(wkv_reference, [a.double() for a in args], grad_out.double())
    assert torch.isfinite(fast).all() and all(torch.isfinite(g).all() for g in fast_grads)
    assert _rel(fast, truth) < 1e-5
    assert _rel(fast, slow) < 1e-5
    for name, fg, sg, tg in zip(("time_decay", "time_first", "k", "v"), fast_grads, slow_grads, truth_grads):
        # float32 recurrences over 41 tokens; at k x 30 the reference is no closer to float64 than we are.
        assert _rel(fg, tg) < 1e-4, name
        assert _rel(fg, sg) < 1e-4, name


@IMPLS
def test_wkv_matches_direct_formula_in_float64(fast_wkv) -> None:
    args = _inputs(2, 23, 8, dtype=torch.float64)
    grad_out = torch.randn(2, 23, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    fast, fast_grads = _value_and_grads(fast_wkv, args, grad_out)
    direct, direct_grads = _value_and_grads(wkv_direct, args, grad_out)
    assert _rel(fast, direct) < 1e-12
    for fg, dg in zip(fast_grads, direct_grads):
        assert _rel(fg, dg) < 1e-10


@pytest.mark.parametrize("k_scale", [1.0, 30.0])
def test_custom_function_gradcheck_float64(k_scale: float) -> None:
    td, tf, k, v = _inputs(2, 7, 3, k_scale=k_scale, dtype=torch.float64)
    args = (td.requires_grad_(), tf.requires_grad_(), k.requires_grad_(), v.requires_grad_())
    assert torch.autograd.gradcheck(WKVFunction.apply, args, eps=1e-6, atol=1e-6)


@IMPLS
def test_no_grad_path_matches_autograd_path(fast_wkv) -> None:
    args = _inputs(4, 30, 12, k_scale=30.0)
    with torch.no_grad():
        plain = fast_wkv(*args)
    tracked = fast_wkv(*(a.clone().requires_grad_() for a in args))
    assert torch.equal(plain, tracked.detach())


@IMPLS
def test_wkv_keeps_dtype_and_single_token(fast_wkv) -> None:
    td, tf, k, v = _inputs(2, 1, 4)
    assert torch.equal(fast_wkv(td, tf, k, v), v)  # one token: wkv_0 = v_0
    out = fast_wkv(td, tf, k.bfloat16(), v.bfloat16())
    assert out.dtype == torch.bfloat16


def test_wkv_runs_the_cpp_kernel_on_cpu() -> None:
    assert wkv_backend("cpu").startswith("C++ kernel: compiled")
    args = _inputs(2, 9, 5)
    assert torch.equal(wkv(*args), wkv_cpu(*args))
    assert wkv_backend("meta").startswith("python token loop")


def test_relu_square_matches_autograd() -> None:
    x = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(relu_square, (x,))
    y = torch.randn(5, 7, requires_grad=True)
    relu_square(y).sum().backward()
    expected = torch.autograd.grad(torch.relu(y).square().sum(), y)[0]
    assert torch.equal(y.grad, expected)


def _firing_sdit(name: str = "sdit-tiny") -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(name).double()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.mul_(8.0)  # untrained LIF layers barely fire
    return model


@pytest.mark.parametrize("name", ["sdit-tiny", "sdit-tiny-norecon"])
def test_whole_model_fast_matches_reference_wkv(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # float64, so no spike flips on rounding differences between the two paths.
    model = _firing_sdit(name)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 28, 28, generator=g, dtype=torch.float64)
    t = torch.randint(0, 1000, (2,), generator=g)

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        out = model(x, t)
        out.square().mean().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters()]

    fast, fast_grads = run()
    monkeypatch.setattr(wkv_module, "wkv", wkv_reference)  # WKV.forward looks ``wkv`` up at call time
    slow, slow_grads = run()
    assert _rel(fast, slow) < 1e-10
    for fg, sg in zip(fast_grads, slow_grads):
        assert torch.allclose(fg, sg, rtol=1e-8, atol=1e-12)


def test_sampling_forward_matches_training_forward() -> None:
    # Without autograd the model takes in-place shortcuts (WKV keeps no states,
    # relu^2 and the sigmoid gates overwrite their inputs); results must not move.
    model = _firing_sdit()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 1, 28, 28, generator=g, dtype=torch.float64)
    t = torch.randint(0, 1000, (3,), generator=g)
    tracked = model(x, t)
    with torch.no_grad():
        plain = model(x, t)
    assert torch.equal(plain, tracked.detach())
