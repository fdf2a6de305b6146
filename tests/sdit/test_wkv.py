from __future__ import annotations

import functools

import pytest
import torch

from sdit.models import wkv as wkv_module
from sdit.models.wkv import CHUNKED_ENV, wkv_backend, wkv_chunked, wkv_direct, wkv_python, wkv_reference
from sdit.models.wkv_ext import wkv_cpu

# Every implementation of the fast path: the tensor-op token loop, the C++ kernel, and the
# chunked parallel form (its default chunk, and chunks of 4 so the shapes below span several).
IMPLS = pytest.mark.parametrize(
    "wkv", [wkv_python, wkv_cpu, wkv_chunked, functools.partial(wkv_chunked, chunk=4)],
    ids=["python", "cpp", "chunked", "chunked4"],
)


def _inputs(batch: int, tokens: int, dim: int, k_scale: float = 1.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    time_decay = torch.randn(dim, generator=g, dtype=dtype) * 2 - 1
    time_first = torch.randn(dim, generator=g, dtype=dtype)
    k = torch.randn(batch, tokens, dim, generator=g, dtype=dtype) * k_scale
    v = torch.randn(batch, tokens, dim, generator=g, dtype=dtype)
    return time_decay, time_first, k, v


@IMPLS
def test_matches_float64_transcription(wkv) -> None:
    args32 = _inputs(3, 37, 16)
    expected = wkv_direct(*(a.double() for a in args32))
    got = wkv(*args32)
    assert got.dtype == torch.float32
    rel = ((got.double() - expected).norm() / expected.norm()).item()
    assert rel < 1e-5


@IMPLS
def test_first_token_is_its_own_value(wkv) -> None:
    # At t = 0 there is no past: wkv_0 = e^{u+k_0} v_0 / e^{u+k_0} = v_0.
    td, tf, k, v = _inputs(2, 5, 8)
    assert torch.allclose(wkv(td, tf, k, v)[:, 0], v[:, 0])


@IMPLS
def test_finite_for_large_k_and_matches_reference(wkv) -> None:
    args = _inputs(2, 50, 16, k_scale=30.0)
    got = wkv(*args)
    assert torch.isfinite(got).all()
    # The literal formula overflows in float32 at this scale; float64 still holds it.
    assert not torch.isfinite(wkv_direct(*args)).all()
    expected = wkv_direct(*(a.double() for a in args))
    rel = ((got.double() - expected).norm() / expected.norm()).item()
    assert rel < 1e-5


@IMPLS
def test_gradients_are_finite_for_large_k(wkv) -> None:
    td, tf, k, v = (a.requires_grad_() for a in _inputs(2, 30, 8, k_scale=30.0))
    wkv(td, tf, k, v).sum().backward()
    for tensor in (td, tf, k, v):
        assert torch.isfinite(tensor.grad).all()


@IMPLS
def test_gradcheck_float64(wkv) -> None:
    args = tuple(a.requires_grad_() for a in _inputs(2, 6, 3, dtype=torch.float64))
    assert torch.autograd.gradcheck(wkv, args, eps=1e-6, atol=1e-5)


# (B, N, D, chunk): N a multiple of the chunk, not one, under one chunk, one token, chunks of one,
# and one token past a chunk boundary.
CHUNK_SHAPES = [(2, 16, 5, 4), (2, 23, 5, 4), (3, 7, 4, 16), (2, 1, 3, 4), (2, 9, 3, 1), (1, 17, 6, 8)]


@pytest.mark.parametrize(("batch", "tokens", "dim", "chunk"), CHUNK_SHAPES)
@pytest.mark.parametrize("k_scale", [1.0, 30.0])
def test_chunked_equals_reference_in_value_and_gradient_float64(batch, tokens, dim, chunk, k_scale) -> None:
    td, tf, k, v = _inputs(batch, tokens, dim, k_scale=k_scale, dtype=torch.float64)
    grad_y = torch.randn(batch, tokens, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(7))

    def run(fn):
        leaves = [a.clone().requires_grad_() for a in (td, tf, k, v)]
        y = fn(*leaves)
        grads = torch.autograd.grad(y, leaves, grad_y, allow_unused=True)
        return y.detach(), [torch.zeros_like(a) if g is None else g for a, g in zip(leaves, grads)]

    y, grads = run(functools.partial(wkv_chunked, chunk=chunk))
    y_ref, grads_ref = run(wkv_reference)
    assert torch.isfinite(y).all() and all(torch.isfinite(g).all() for g in grads)
    assert torch.allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    for name, got, expected in zip(("time_decay", "time_first", "k", "v"), grads, grads_ref):
        assert torch.allclose(got, expected, rtol=1e-10, atol=1e-10), name


def test_chunked_does_not_depend_on_the_chunk() -> None:
    args = _inputs(2, 37, 6, k_scale=5.0, dtype=torch.float64)
    ys = [wkv_chunked(*args, chunk=c) for c in (1, 2, 5, 16, 37, 64)]
    for y in ys[1:]:
        assert torch.allclose(y, ys[0], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        wkv_chunked(*args, chunk=0)


def test_dispatcher_runs_the_chunked_form_where_selected(monkeypatch) -> None:
    args = _inputs(2, 11, 4)
    monkeypatch.setenv(CHUNKED_ENV, "1")  # as on CUDA
    assert torch.equal(wkv_module.wkv(*args), wkv_chunked(*args))
    assert wkv_backend("cpu").startswith("chunked parallel form")
    monkeypatch.setenv(CHUNKED_ENV, "0")
    assert wkv_backend("cuda").startswith("python token loop")
    monkeypatch.delenv(CHUNKED_ENV)
    assert wkv_backend("cuda").startswith("chunked parallel form (chunks of 16 tokens")  # CUDA's default
    assert not wkv_backend("cpu").startswith("chunked")


def test_chunked_traces_whole_under_torch_compile() -> None:
    # fullgraph: no graph break anywhere in the chunked form (aot_eager: no C++ toolchain needed).
    torch._dynamo.reset()
    compiled = torch.compile(functools.partial(wkv_chunked, chunk=4), fullgraph=True, backend="aot_eager")
    args = [a.requires_grad_() for a in _inputs(2, 10, 3, dtype=torch.float64)]
    y = compiled(*args)
    assert torch.allclose(y, wkv_reference(*args), rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(y.sum(), args)
    expected = torch.autograd.grad(wkv_reference(*args).sum(), args)
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)
