"""The fused paths (LIF kernel, token-shift mixes) give spikingjelly's / the plain form's results."""

from __future__ import annotations

import contextlib

import pytest
import torch
from spikingjelly.activation_based import functional, neuron, surrogate
from torch.utils._python_dispatch import TorchDispatchMode

from sdit.models import build_model, cpu_kernels, fused
from sdit.models.fused import shift_mixes, token_shift
from sdit.models.lif import LIFNode


def _plain_mixes(x, mus):
    shifted = token_shift(x)
    delta = x - shifted
    return [torch.addcmul(shifted, delta, mu) for mu in mus]


def _mus(dim: int, count: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(5)
    return [torch.rand(dim, generator=g, dtype=dtype) for _ in range(count)]


@pytest.mark.parametrize("kernels", ["1", "0"], ids=["C kernel", "tensor ops"])
def test_shift_mixes_without_grad_are_bit_identical(kernels: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cpu_kernels.ENV_VAR, kernels)
    x = torch.randn(3, 11, 40, generator=torch.Generator().manual_seed(0))
    mus = _mus(40, 3)
    with torch.no_grad():
        fast = shift_mixes(x, tuple(mus))
    for got, expected in zip(fast, _plain_mixes(x, mus)):
        assert torch.equal(got, expected)


def test_shift_mixes_gradient_matches_autograd() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 7, 5, generator=g, dtype=torch.float64)
    mus = _mus(5, 3, torch.float64)
    grads = [torch.randn(2, 7, 5, generator=g, dtype=torch.float64) for _ in mus]

    def run(fn):
        leaves = [x.clone().requires_grad_()] + [m.clone().requires_grad_() for m in mus]
        outs = fn(leaves[0], tuple(leaves[1:]))
        sum((o * gr).sum() for o, gr in zip(outs, grads)).backward()
        return [o.detach() for o in outs], [leaf.grad for leaf in leaves]

    fast_out, fast_grads = run(shift_mixes)
    plain_out, plain_grads = run(lambda a, m: _plain_mixes(a, m))
    for a, b in zip(fast_out, plain_out):
        assert torch.equal(a, b)
    for a, b in zip(fast_grads, plain_grads):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    leaves = (x.clone().requires_grad_(), *(m.clone().requires_grad_() for m in mus[:2]))
    assert torch.autograd.gradcheck(lambda a, *m: shift_mixes(a, m), leaves)


@pytest.mark.parametrize("count", [3, 2])
def test_shift_mixes_kernel_backward_matches_autograd_in_float32(count: int, monkeypatch) -> None:
    assert cpu_kernels.available(), cpu_kernels.extension_status()
    g = torch.Generator().manual_seed(8)
    x = torch.randn(5, 13, 24, generator=g)
    mus = _mus(24, count)
    grads = [torch.randn(5, 13, 24, generator=g) for _ in mus]
    called = []
    real = fused._mixes_backward_cpu
    monkeypatch.setattr(fused, "_mixes_backward_cpu", lambda *a: called.append(1) or real(*a))

    def run(fn, dtype):
        leaves = [x.to(dtype, copy=True).requires_grad_()] + [m.to(dtype, copy=True).requires_grad_() for m in mus]
        outs = fn(leaves[0], tuple(leaves[1:]))
        sum((o * gr.to(dtype)).sum() for o, gr in zip(outs, grads)).backward()
        return [o.detach() for o in outs], [leaf.grad for leaf in leaves]

    fast_out, fast_grads = run(shift_mixes, torch.float32)
    assert called == [1]  # the C kernel's backward ran
    plain_out, _ = run(_plain_mixes, torch.float32)
    _, exact_grads = run(_plain_mixes, torch.float64)
    for a, b in zip(fast_out, plain_out):
        assert torch.equal(a, b)  # the forward kernel: bit-identical
    for a, b in zip(fast_grads, exact_grads):
        torch.testing.assert_close(a, b.float(), rtol=1e-5, atol=1e-5)


def test_shift_mixes_take_the_plain_form_while_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(fused, "_mixes_out", lambda *a: calls.append(a) or [])
    monkeypatch.setattr(fused, "counting", lambda: True)
    x = torch.randn(2, 4, 3)
    with torch.no_grad():
        out = shift_mixes(x, tuple(_mus(3, 2)))
    assert calls == [] and len(out) == 2


def _lifs():
    def make(cls):
        return cls(tau=2.0, v_threshold=1.0, v_reset=0.0, surrogate_function=surrogate.ATan(), step_mode="m")

    return make(neuron.LIFNode), make(LIFNode)


def test_lif_kernel_is_built_and_named_like_spikingjellys() -> None:
    assert cpu_kernels.available(), cpu_kernels.extension_status()
    assert cpu_kernels.extension_status().startswith("C kernels")
    assert type(LIFNode()).__name__ == "LIFNode" and isinstance(LIFNode(), neuron.LIFNode)


@pytest.mark.parametrize("carry", [False, True])
def test_lif_kernel_matches_spikingjelly_in_value_and_gradient(carry: bool) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 3, 9, 16, generator=g) * 1.5 + 0.6  # (T, B, M, D), about 20 % spikes
    grad = torch.randn(4, 3, 9, 16, generator=g)
    results = []
    for module in _lifs():
        xs = [x.clone().requires_grad_(), (x * 0.7).clone().requires_grad_()]
        out = module(xs[0])
        if carry:  # a second call from the carried membrane: gradients flow through the state
            out = out + module(xs[1])
        (out * grad).sum().backward()
        results.append((out.detach(), module.v.detach().clone(), [xx.grad for xx in xs]))
        functional.reset_net(module)
    (ref_out, ref_v, ref_grads), (out, v, grads) = results
    assert ref_out.sum() > 0
    assert torch.equal(out, ref_out) and torch.equal(v, ref_v)
    for got, expected in zip(grads, ref_grads):
        if expected is None:
            assert got is None
        else:
            assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_lif_kernel_without_grad_and_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(4, 2, 5, 7, generator=torch.Generator().manual_seed(4)) + 0.5
    ref, fast = _lifs()
    with torch.no_grad():
        expected, got = ref(x), fast(x)
    assert torch.equal(got, expected) and torch.equal(fast.v, ref.v)
    functional.reset_net(fast)
    monkeypatch.setenv(cpu_kernels.ENV_VAR, "0")
    assert not cpu_kernels.available() and cpu_kernels.extension_status().startswith("disabled")
    with torch.no_grad():
        assert torch.equal(fast(x), expected)  # spikingjelly's own code
    functional.reset_net(fast)
    functional.reset_net(ref)
    with torch.no_grad():
        assert torch.equal(fast(x.double()), ref(x.double()))  # float64: spikingjelly's code


class _Watch(TorchDispatchMode):
    """A do-nothing dispatch mode: under it the models take the plain (counted) path."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", ["sdit-tiny", "sdit-tiny-norecon", "dit-tiny"])
def test_fused_model_path_matches_the_counted_path(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.mul_(8.0 if name.startswith("sdit") else 1.0)  # make the LIF layers fire
                if name.startswith("dit"):
                    module.weight.add_(0.05 * torch.randn_like(module.weight))  # past adaLN-Zero's zeros
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 1, 28, 28, generator=g)
    t = torch.randint(0, 1000, (2,), generator=g)

    def run(watched: bool):
        model.zero_grad(set_to_none=True)
        with _Watch() if watched else contextlib.nullcontext():
            out = model(x, t)
            out.square().mean().backward()
        with torch.no_grad(), _Watch() if watched else contextlib.nullcontext():
            sampled = model(x, t)
        return out.detach(), sampled, [p.grad.clone() for p in model.parameters() if p.grad is not None]

    (fast, fast_sample, fast_grads), (plain, plain_sample, plain_grads) = run(False), run(True)
    if name.startswith("sdit"):  # the same float operations: bit-identical, so no spike flips
        assert torch.equal(fast, plain) and torch.equal(fast_sample, plain_sample)
        rtol = 1e-5
    else:  # fused attention and multiply-adds round differently
        assert torch.allclose(fast, plain, rtol=1e-4, atol=1e-6)
        assert torch.allclose(fast_sample, plain_sample, rtol=1e-4, atol=1e-6)
        rtol = 1e-3
    assert len(fast_grads) == len(plain_grads)
    for a, b in zip(fast_grads, plain_grads):
        assert torch.allclose(a, b, rtol=rtol, atol=1e-6 * float(b.abs().max()) + 1e-9)


def test_cpu_kernels_prebuilt_copy_is_used_before_the_cache(tmp_path, monkeypatch):
    """``python -m sdit.build_ext`` builds the C kernels into the environment; loading finds them there
    and never writes to the run-time cache."""
    import shutil

    from sdit.models import cpu_kernels

    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    prebuilt, cache = tmp_path / "prebuilt", tmp_path / "cache"
    path = cpu_kernels.build_into(prebuilt)
    assert path == prebuilt / f"{cpu_kernels.library_name()}.so" and path.is_file()
    monkeypatch.setattr(cpu_kernels, "_prebuilt_dir", lambda: prebuilt)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(cache))
    assert cpu_kernels._build(cpu_kernels.library_name()) == path
    assert not cache.exists()


def _dit_leaves(dtype=torch.float64):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 5, 8, generator=g, dtype=dtype)
    a = torch.randn(3, 8, generator=g, dtype=dtype)
    b = torch.randn(3, 8, generator=g, dtype=dtype)
    return [t.requires_grad_() for t in (x, a, b)]


@pytest.mark.parametrize(
    ("fn", "plain"),
    [
        (fused.modulate, lambda x, shift, scale: x * (1 + scale[:, None]) + shift[:, None]),
        (fused.gated_residual, lambda x, gate, out: x + gate[:, None] * out[:, :, :]),
    ],
    ids=["modulate", "gated_residual"],
)
def test_dit_multiply_adds_match_the_plain_form_in_value_and_gradient(fn, plain) -> None:
    leaves = _dit_leaves()
    if fn is fused.gated_residual:  # out is (B, L, D) like x
        leaves[2] = torch.randn(3, 5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
        leaves[2].requires_grad_()
    grad = torch.randn(3, 5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    out = fn(*leaves)
    assert out.grad_fn is not None and "Backward" in type(out.grad_fn).__name__  # the hand-written backward
    fast = torch.autograd.grad(out, leaves, grad)
    expected_out = plain(*leaves)
    slow = torch.autograd.grad(expected_out, leaves, grad)
    torch.testing.assert_close(out, expected_out, rtol=1e-12, atol=1e-14)
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert torch.autograd.gradcheck(fn, tuple(t.detach().clone().requires_grad_() for t in leaves))
    with torch.no_grad():  # without autograd: the one addcmul
        assert torch.equal(fn(*leaves), out.detach())


def test_split_heads_gradient_is_the_permute_one() -> None:
    g = torch.Generator().manual_seed(7)
    qkv = torch.randn(2, 5, 3, 4, 6, generator=g, dtype=torch.float64, requires_grad=True)  # (B, L, 3, H, d)
    grads = [torch.randn(2, 4, 5, 6, generator=g, dtype=torch.float64) for _ in range(3)]
    q, k, v = fused.split_heads(qkv)
    pq, pk, pv = qkv.permute(2, 0, 3, 1, 4)
    for a, b in zip((q, k, v), (pq, pk, pv), strict=True):
        assert torch.equal(a, b)
    (fast,) = torch.autograd.grad((q, k, v), qkv, grads)
    (slow,) = torch.autograd.grad((pq, pk, pv), qkv, grads)
    assert torch.equal(fast, slow)
    q, k, _ = fused.split_heads(qkv)  # v unused: its slot of the gradient is zero
    (partial,) = torch.autograd.grad((q * grads[0]).sum() + (k * grads[1]).sum(), qkv)
    assert torch.equal(partial[:, :, 2], torch.zeros_like(partial[:, :, 2]))
    assert torch.equal(partial[:, :, :2], slow[:, :, :2])


def test_dit_stream_is_contiguous() -> None:
    model = build_model("dit-tiny")
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].is_contiguous()))
    with torch.no_grad():
        model(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]))
    assert seen == [True]  # LayerNorm and the multiply-adds read whole rows, no layout copies


def test_relu_square_kernel_is_bit_identical_to_the_tensor_ops() -> None:
    from sdit.models.layers import _ReluSquare, relu_square

    g = torch.Generator().manual_seed(9)
    x = torch.randn(6, 11, 40, generator=g)
    x[0, 0, :4] = torch.tensor([0.0, -0.0, float("nan"), float("inf")])
    grad = torch.randn(6, 11, 40, generator=g)
    fast_x = x.clone().requires_grad_()
    fast = relu_square(fast_x)
    assert type(fast.grad_fn).__name__ == "_ReluSquareKernelBackward"
    fast.backward(grad)
    plain_x = x.clone().requires_grad_()
    plain = _ReluSquare.apply(plain_x)
    plain.backward(grad)
    assert torch.equal(fast, plain) is False  # NaN != NaN; compare with NaNs equal
    torch.testing.assert_close(fast, plain, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(fast_x.grad, plain_x.grad, rtol=0, atol=0, equal_nan=True)
    with torch.no_grad():  # in place on x
        inplace = x.clone()
        assert relu_square(inplace) is inplace
        torch.testing.assert_close(inplace, plain.detach(), rtol=0, atol=0, equal_nan=True)


def _op_names(fn) -> set[str]:
    """Names of the ops ``fn()`` runs, from torch's profiler (which, unlike a dispatch mode, does not count)."""
    from torch.profiler import profile

    with profile() as prof:
        fn()
    return {event.name for event in prof.events()}


def nn_gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.gelu(x, approximate="tanh")


@pytest.mark.parametrize("cols", [64, 13], ids=["vector columns", "scalar tail"])
def test_bias_gelu_kernel_matches_torch_gelu_tanh_in_value_and_gradient(cols: int) -> None:
    g = torch.Generator().manual_seed(11)
    y = torch.randn(4, 9, cols, generator=g) * 4  # (B, L, C): the tails of the tanh and the middle
    y[0, 0, :6] = torch.tensor([0.0, -0.0, float("nan"), float("inf"), 100.0, -100.0])
    bias = torch.randn(cols, generator=g)
    bias[:6] = 0.0
    grad = torch.randn(4, 9, cols, generator=g)
    fast_y, fast_b = y.clone().requires_grad_(), bias.clone().requires_grad_()
    fast = fused._BiasGelu.apply(fast_y, fast_b)
    fast.backward(grad)
    exact_y, exact_b = y.double().requires_grad_(), bias.double().requires_grad_()
    exact = nn_gelu_tanh(exact_y + exact_b)
    exact.backward(grad.double())
    # within float rounding of the exact function: a few ulps where torch's float32 gelu loses more
    torch.testing.assert_close(fast.double(), exact, rtol=4e-6, atol=1e-6, equal_nan=True)
    torch.testing.assert_close(fast.detach(), nn_gelu_tanh(y + bias), rtol=1e-4, atol=1e-6, equal_nan=True)
    finite = torch.isfinite(y)
    torch.testing.assert_close(fast_y.grad[finite].double(), exact_y.grad[finite], rtol=4e-6, atol=1e-6)
    finite_cols = finite.all(dim=(0, 1))
    torch.testing.assert_close(fast_b.grad[finite_cols].double(), exact_b.grad[finite_cols], rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # without autograd: the same values, in place or not; no bias: GELU(y)
        inplace = y.clone()
        fused.bias_gelu_cpu_(inplace, bias)
        torch.testing.assert_close(inplace, fast.detach(), rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(fused.bias_gelu_cpu(y, None), fused.bias_gelu_cpu(y, torch.zeros(cols)),
                                   rtol=0, atol=0, equal_nan=True)


def test_gelu_mlp_runs_the_kernel_only_when_nothing_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    mlp = build_model("dit-tiny").blocks[0].mlp  # Linear(32, 128) -> GELU(tanh) -> Linear(128, 32)
    x = torch.randn(3, 16, 32)
    grad = torch.randn(3, 16, 32)

    def grads(fn):
        mlp.zero_grad(set_to_none=True)
        leaf = x.clone().requires_grad_()
        out = fn(leaf)
        out.backward(grad)
        return out.detach(), [leaf.grad, *(p.grad for p in mlp.parameters())]

    (fast, fast_grads), (plain, plain_grads) = grads(lambda v: fused.gelu_mlp(mlp, v)), grads(mlp)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)
    for a, b in zip(fast_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(fused.gelu_mlp(mlp, x), mlp(x), rtol=1e-5, atol=1e-6)
    names = _op_names(lambda: fused.gelu_mlp(mlp, x.requires_grad_()).sum().backward())
    assert {"sdit::bias_gelu", "sdit::bias_gelu_backward"} <= names and "aten::gelu" not in names
    x.requires_grad_(False)
    with torch.no_grad():
        assert "sdit::bias_gelu_" in _op_names(lambda: fused.gelu_mlp(mlp, x))
        with _Watch():  # counted: the plain Linear -> gelu -> Linear
            counted = _op_names(lambda: fused.gelu_mlp(mlp, x))
        handle = mlp[1].register_forward_hook(lambda module, args, out: None)  # hooked: the modules run
        hooked = _op_names(lambda: fused.gelu_mlp(mlp, x))
        handle.remove()
        monkeypatch.setenv(cpu_kernels.ENV_VAR, "0")
        off = _op_names(lambda: fused.gelu_mlp(mlp, x))
    for names in (counted, hooked, off):
        assert "aten::gelu" in names and not any(n.startswith("sdit::bias_gelu") for n in names)


def test_norm_modulate_runs_the_kernel_only_when_sampling(monkeypatch: pytest.MonkeyPatch) -> None:
    block = build_model("dit-tiny").blocks[0]  # norm1: LayerNorm(32), no affine, eps 1e-6
    g = torch.Generator().manual_seed(9)
    x = 3.0 + 2.0 * torch.randn(3, 16, 32, generator=g)  # rows far from zero mean and unit variance
    shift, scale = torch.randn(3, 32, generator=g), torch.randn(3, 32, generator=g)
    expected = fused.modulate(block.norm1(x), shift, scale)
    with torch.no_grad():
        fast = fused.norm_modulate(block.norm1, x, shift, scale)
        assert "sdit::norm_modulate" in _op_names(lambda: fused.norm_modulate(block.norm1, x, shift, scale))
        cond = torch.randn(3, 6 * 32, generator=g)  # adaLN's chunks are strided (B, D) views
        a, b = cond[:, :32], cond[:, 32:64]
        torch.testing.assert_close(fused.norm_modulate(block.norm1, x, a, b), fused.modulate(block.norm1(x), a, b),
                                   rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast, expected, rtol=1e-5, atol=1e-5)
    leaf = x.clone().requires_grad_()  # under autograd: LayerNorm and modulate, their gradients
    tracked = _op_names(lambda: fused.norm_modulate(block.norm1, leaf, shift, scale).sum().backward())
    torch.testing.assert_close(leaf.grad, torch.autograd.grad(fused.modulate(block.norm1(leaf), shift, scale).sum(),
                                                              leaf)[0])
    with torch.no_grad():
        with _Watch():  # counted
            counted = _op_names(lambda: fused.norm_modulate(block.norm1, x, shift, scale))
        handle = block.norm1.register_forward_hook(lambda module, args, out: None)  # hooked: the module runs
        hooked = _op_names(lambda: fused.norm_modulate(block.norm1, x, shift, scale))
        handle.remove()
        strided = _op_names(lambda: fused.norm_modulate(block.norm1, x.transpose(0, 1), shift[:1], scale[:1]))
        monkeypatch.setenv(cpu_kernels.ENV_VAR, "0")
        off = _op_names(lambda: fused.norm_modulate(block.norm1, x, shift, scale))
    for names in (tracked, counted, hooked, strided, off):
        assert "aten::native_layer_norm" in names and "sdit::norm_modulate" not in names
