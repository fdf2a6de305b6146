from __future__ import annotations

import pytest
import torch

from sdit.models.wkv import wkv_direct, wkv_python
from sdit.models.wkv_ext import wkv_cpu

# Both implementations of the fast path: the tensor-op token loop and the C++ kernel.
IMPLS = pytest.mark.parametrize("wkv", [wkv_python, wkv_cpu], ids=["python", "cpp"])


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
