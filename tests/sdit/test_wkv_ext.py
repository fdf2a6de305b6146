"""The compiled CPU WKV kernel (sdit/models/wkv_cpu.cpp via sdit.models.wkv_ext).

The extension must build wherever the tests run (g++ and ninja are project
requirements), so a failed build fails these tests with the compiler's message
instead of skipping them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sdit.models import wkv_ext
from sdit.models.wkv import wkv_direct
from sdit.models.wkv import wkv_python as wkv  # the tensor-op token loop, not the dispatcher
from sdit.models.wkv_ext import wkv_cpu


@pytest.fixture(scope="module")
def ext():
    module = wkv_ext.load_extension()
    if module is None:
        pytest.fail(
            f"WKV CPU extension: {wkv_ext.extension_status()} (set SDIT_WKV_EXT unset or !=0; needs g++ and ninja)\n"
            f"{wkv_ext.extension_error()}"
        )
    return module


def _inputs(batch: int, tokens: int, dim: int, k_scale: float = 1.0, dtype=torch.float32, decay_shift: float = -1.0):
    # time_decay ~ N(decay_shift, 1): w = e^time_decay spans ~e^-4..e^2 by default. The
    # literal formula's gradient turns NaN once (N - 1) w + k overflows exp in its
    # masked-out entries (0 * inf), so comparisons with it keep w moderate.
    g = torch.Generator().manual_seed(1)
    time_decay = torch.randn(dim, generator=g, dtype=dtype) + decay_shift
    time_first = torch.randn(dim, generator=g, dtype=dtype)
    k = torch.randn(batch, tokens, dim, generator=g, dtype=dtype) * k_scale
    v = torch.randn(batch, tokens, dim, generator=g, dtype=dtype)
    return time_decay, time_first, k, v


def _value_and_grads(fn, args, grad_y):
    leaves = [a.detach().clone().requires_grad_() for a in args]
    y = fn(*leaves)
    y.backward(grad_y)
    return y.detach(), [leaf.grad for leaf in leaves]


def _rel(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.double() - expected.double()).norm() / expected.double().norm()).item()


# D = 8 and 40: one partial channel block; 130: a full block of 128 and a partial one.
SHAPES = [(3, 17, 8, 1.0), (3, 17, 8, 30.0), (2, 50, 40, 30.0), (2, 20, 130, 1.0)]


def test_status_reports_compiled(ext) -> None:
    status = wkv_ext.extension_status()
    assert status.startswith("compiled (sdit_wkv_cpu_"), status
    assert ext.isa() in status
    assert wkv_ext.available()
    assert wkv_ext.extension_error() is None


@pytest.mark.parametrize("shape", SHAPES)
def test_float64_matches_transcription(ext, shape) -> None:
    *size, k_scale = shape
    args = _inputs(*size, k_scale=k_scale, dtype=torch.float64)
    grad_y = torch.randn(*size, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y, grads = _value_and_grads(wkv_cpu, args, grad_y)
    y_ref, grads_ref = _value_and_grads(wkv_direct, args, grad_y)
    assert y.dtype == torch.float64
    assert torch.isfinite(y_ref).all()  # the literal formula still holds in float64 at k * 30
    assert _rel(y, y_ref) < 1e-12
    for name, got, expected in zip(("time_decay", "time_first", "k", "v"), grads, grads_ref):
        assert _rel(got, expected) < 1e-10, name


@pytest.mark.parametrize("shape", SHAPES)
def test_float32_matches_python_fast_path(ext, shape) -> None:
    *size, k_scale = shape
    args = _inputs(*size, k_scale=k_scale)
    grad_y = torch.randn(*size, generator=torch.Generator().manual_seed(2))
    y, grads = _value_and_grads(wkv_cpu, args, grad_y)
    y_py, grads_py = _value_and_grads(wkv, args, grad_y)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()
    assert _rel(y, y_py) < 5e-7
    for name, got, expected in zip(("time_decay", "time_first", "k", "v"), grads, grads_py):
        assert _rel(got, expected) < 3e-6, name
    # And against the float64 ground truth (the Python path's own error reaches ~1e-6 / 4e-6 at k * 30).
    y_ref, grads_ref = _value_and_grads(wkv_direct, [a.double() for a in args], grad_y.double())
    assert _rel(y, y_ref) < 1e-5
    for name, got, expected in zip(("time_decay", "time_first", "k", "v"), grads, grads_ref):
        assert _rel(got, expected) < 4e-5, name


def test_float32_large_decay_matches_python_fast_path(ext) -> None:
    # w up to ~e^8: the past is forgotten within a token, exponents hit the -60 floor.
    args = _inputs(2, 40, 130, k_scale=10.0, decay_shift=3.0)
    grad_y = torch.randn(2, 40, 130, generator=torch.Generator().manual_seed(2))
    y, grads = _value_and_grads(wkv_cpu, args, grad_y)
    y_py, grads_py = _value_and_grads(wkv, args, grad_y)
    assert _rel(y, y_py) < 5e-7
    for name, got, expected in zip(("time_decay", "time_first", "k", "v"), grads, grads_py):
        assert _rel(got, expected) < 3e-6, name


def test_every_instruction_set_agrees(ext) -> None:
    # The float32 loops exist per ISA; check each one this CPU runs (baseline always).
    args = _inputs(3, 33, 130, k_scale=5.0)
    grad_y = torch.randn(3, 33, 130, generator=torch.Generator().manual_seed(3))
    y_py, grads_py = _value_and_grads(wkv, args, grad_y)
    isas = ext.supported_isas()
    assert isas[0] == "baseline"
    try:
        for isa in isas:
            assert ext.set_isa(isa) == isa
            y, grads = _value_and_grads(wkv_cpu, args, grad_y)
            assert _rel(y, y_py) < 5e-7, isa
            for got, expected in zip(grads, grads_py):
                assert _rel(got, expected) < 3e-6, isa
    finally:
        ext.set_isa("best")
    assert ext.isa() == isas[-1]


def test_threads_give_identical_results(ext) -> None:
    # Work units (batch row, channel block) are independent and the batch sums are
    # taken after the parallel loop, so the thread count must not change a bit.
    args = _inputs(4, 10, 300)
    grad_y = torch.randn(4, 10, 300, generator=torch.Generator().manual_seed(5))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        y1, grads1 = _value_and_grads(wkv_cpu, args, grad_y)
        torch.set_num_threads(2)
        y2, grads2 = _value_and_grads(wkv_cpu, args, grad_y)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(y1, y2)
    for got, expected in zip(grads2, grads1):
        assert torch.equal(got, expected)


def test_gradcheck(ext) -> None:
    args = [a.requires_grad_() for a in _inputs(2, 6, 5, k_scale=2.0, dtype=torch.float64)]
    assert torch.autograd.gradcheck(wkv_cpu, args, eps=1e-6, atol=1e-7, rtol=1e-6)


def test_first_token_is_its_own_value(ext) -> None:
    td, tf, k, v = _inputs(2, 5, 8)
    assert torch.equal(wkv_cpu(td, tf, k, v)[:, 0], v[:, 0])


def test_no_grad_path(ext) -> None:
    args = [a.requires_grad_() for a in _inputs(2, 9, 16)]
    with torch.no_grad():
        y = wkv_cpu(*args)
    assert not y.requires_grad and y.grad_fn is None
    assert torch.allclose(y, wkv(*[a.detach() for a in args]), rtol=1e-5, atol=1e-6)
    y_grad = wkv_cpu(*args)
    assert y_grad.grad_fn is not None
    assert torch.equal(y, y_grad.detach())


def test_dtypes(ext) -> None:
    args64 = _inputs(2, 7, 12, dtype=torch.float64)
    assert wkv_cpu(*args64).dtype == torch.float64
    # bfloat16 in, bfloat16 out, computed in float32 like the Python path.
    args16 = [a.to(torch.bfloat16) for a in _inputs(2, 7, 12)]
    y16 = wkv_cpu(*args16)
    assert y16.dtype == torch.bfloat16
    assert torch.allclose(y16.float(), wkv(*args16).float(), rtol=1e-2, atol=1e-2)


def test_non_contiguous_inputs(ext) -> None:
    td, tf, k, v = _inputs(2, 11, 24)
    k_t = k.transpose(1, 2).contiguous().transpose(1, 2)  # same values, (D-major) strides
    v_s = torch.stack([v, -v], dim=-1)[..., 0]  # strided view: equals v
    assert not k_t.is_contiguous() and not v_s.is_contiguous()
    assert torch.equal(v_s, v)
    assert torch.equal(wkv_cpu(td, tf, k_t, v_s), wkv_cpu(td, tf, k, v))


def test_bad_shapes_raise(ext) -> None:
    td, tf, k, v = _inputs(2, 5, 8)
    with pytest.raises(RuntimeError, match="must match k"):
        wkv_cpu(td, tf, k, v[:, :4])
    with pytest.raises(RuntimeError, match="w must be"):
        wkv_cpu(td[:4], tf, k, v)


def test_disabled_by_env(ext, monkeypatch) -> None:
    monkeypatch.setenv("SDIT_WKV_EXT", "0")
    assert wkv_ext.extension_status() == "disabled by SDIT_WKV_EXT=0"
    assert wkv_ext.load_extension() is None
    with pytest.raises(RuntimeError, match="SDIT_WKV_EXT=0"):
        wkv_cpu(*_inputs(1, 3, 4))
    monkeypatch.setenv("SDIT_WKV_EXT", "1")
    assert wkv_ext.load_extension() is ext  # the switch is read per call, the build is kept


def test_build_failure_is_reported_not_raised(monkeypatch, tmp_path, capsys) -> None:
    from torch.utils import cpp_extension

    def broken_load(**kwargs):
        raise RuntimeError("Error building extension 'x': compiler exploded\nsecond line of the log")

    monkeypatch.delenv("SDIT_WKV_EXT", raising=False)
    monkeypatch.setattr(wkv_ext, "_state", wkv_ext._State())  # forget the real build for this test
    monkeypatch.setattr(wkv_ext, "prebuilt_dir", lambda: tmp_path / "env")  # no library anywhere
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cpp_extension, "load", broken_load)
    assert wkv_ext.load_extension() is None
    status = wkv_ext.extension_status()
    assert status == "unavailable: RuntimeError: Error building extension 'x': compiler exploded"
    assert "second line of the log" in wkv_ext.extension_error()
    assert capsys.readouterr().err == wkv_ext.BUILD_NOTICE.format(where=tmp_path / "cache") + "\n"
    assert not (tmp_path / "cache" / wkv_ext._extension_name()).exists()  # the failed build left nothing named
    with pytest.raises(RuntimeError, match="compiler exploded"):
        wkv_cpu(*_inputs(1, 3, 4))


def _fresh_state(monkeypatch, env: Path, cache: Path) -> None:
    monkeypatch.delenv("SDIT_WKV_EXT", raising=False)
    monkeypatch.setattr(wkv_ext, "_state", wkv_ext._State())
    monkeypatch.setattr(wkv_ext, "prebuilt_dir", lambda: env)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(cache))


def _no_build(**kwargs):
    raise AssertionError("the kernel was compiled although a library was there")


def test_prebuilt_library_is_loaded_without_compiling(ext, monkeypatch, tmp_path, capsys) -> None:
    from torch.utils import cpp_extension

    name = wkv_ext._extension_name()
    built = wkv_ext.extension_path()
    assert built is not None and built.name == f"{name}.so"
    env = tmp_path / "venv" / "share" / "sdit" / "torch_extensions"
    (env / name).mkdir(parents=True)
    shutil.copy2(built, env / name / built.name)  # what `python -m sdit.build_ext` leaves in the environment
    _fresh_state(monkeypatch, env, tmp_path / "empty-cache")
    monkeypatch.setattr(cpp_extension, "load", _no_build)
    module = wkv_ext.load_extension()
    assert module is not None, wkv_ext.extension_error()
    assert wkv_ext.extension_path() == env / name / f"{name}.so"
    assert not wkv_ext.built_here()
    assert capsys.readouterr().err == ""  # no build notice
    td, tf, k, v = _inputs(2, 7, 9)
    assert torch.equal(module.forward(td.exp(), tf, k, v), ext.forward(td.exp(), tf, k, v))


def test_a_fresh_process_loads_the_prebuilt_library_itself(ext, tmp_path) -> None:
    # In one process an extension module of a name already imported is reused, so the file
    # a module came from is checked in a fresh interpreter, with compiling made impossible.
    name = wkv_ext._extension_name()
    env = tmp_path / "env"
    (env / name).mkdir(parents=True)
    shutil.copy2(wkv_ext.extension_path(), env / name / f"{name}.so")
    code = (
        "import sys; from pathlib import Path; from torch.utils import cpp_extension; "
        "from sdit.models import wkv_ext; "
        "cpp_extension.load = lambda **kw: sys.exit('compiled'); "
        f"wkv_ext.prebuilt_dir = lambda: Path({str(env)!r}); "
        "m = wkv_ext.load_extension(); assert m is not None, wkv_ext.extension_error(); "
        "print(m.__file__, wkv_ext.built_here())"
    )
    root = Path(__file__).resolve().parents[2]
    env_vars = {**os.environ, "PYTHONPATH": str(root), "TORCH_EXTENSIONS_DIR": str(tmp_path / "no-cache")}
    env_vars.pop("SDIT_WKV_EXT", None)
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env_vars, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == [str(env / name / f"{name}.so"), "False"]
    assert done.stderr == ""  # no build notice


def test_cache_is_used_when_the_environment_has_none(ext, monkeypatch, tmp_path, capsys) -> None:
    from torch.utils import cpp_extension

    name = wkv_ext._extension_name()
    cache = tmp_path / "cache"
    (cache / name).mkdir(parents=True)
    shutil.copy2(wkv_ext.extension_path(), cache / name / f"{name}.so")
    _fresh_state(monkeypatch, tmp_path / "env-without", cache)
    monkeypatch.setattr(cpp_extension, "load", _no_build)
    assert wkv_ext.load_extension() is not None, wkv_ext.extension_error()
    assert wkv_ext.extension_path() == cache / name / f"{name}.so"
    assert capsys.readouterr().err == ""


def test_the_name_is_keyed_on_the_environment(monkeypatch) -> None:
    name = wkv_ext._extension_name()
    assert name.startswith("sdit_wkv_cpu_") and len(name) == len("sdit_wkv_cpu_") + 12
    monkeypatch.setattr(torch, "__version__", "0.0.0-another-torch")
    assert wkv_ext._extension_name() != name
    monkeypatch.undo()
    monkeypatch.setattr(wkv_ext, "_SOURCE", Path("/another/checkout/sdit/models/wkv_cpu.cpp"))
    monkeypatch.setattr(Path, "read_bytes", lambda self: b"the same source text")
    other = wkv_ext._extension_name()
    monkeypatch.setattr(wkv_ext, "_SOURCE", Path("/a/third/checkout/sdit/models/wkv_cpu.cpp"))
    assert wkv_ext._extension_name() != other  # same source text, another checkout: another library


def test_build_command_reports_an_existing_library(ext, tmp_path, capsys) -> None:
    name = wkv_ext._extension_name()
    (tmp_path / name).mkdir()
    shutil.copy2(wkv_ext.extension_path(), tmp_path / name / f"{name}.so")
    assert wkv_ext.main(["--dir", str(tmp_path)]) == 0
    from sdit.models import cpu_kernels

    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"WKV kernel already built: {tmp_path / name / (name + '.so')}"
    assert out[1] == f"C kernels (LIF, token-shift mixes): {tmp_path / (cpu_kernels.library_name() + '.so')}"


def test_build_command_failure_is_one_line(monkeypatch, tmp_path, capsys) -> None:
    from torch.utils import cpp_extension

    def broken_load(**kwargs):
        raise RuntimeError("Error building extension: g++ not found\nmore log")

    monkeypatch.setattr(cpp_extension, "load", broken_load)
    assert wkv_ext.main(["--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == ("error: building the WKV kernel failed (RuntimeError: Error building extension: g++ not found); "
                       "sdit will use the slower tensor-op loop")
    assert [p.name for p in tmp_path.iterdir()] == []  # the temporary build directory is gone


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # inductor's imports
def test_torch_compile_matches_eager(ext) -> None:
    torch._dynamo.reset()

    def fn(time_decay, time_first, k, v):
        assert wkv_ext.available()  # constant under torch.compile: no graph break
        return wkv_cpu(time_decay, time_first, k, v) * 2.0

    compiled = torch.compile(fn, fullgraph=True)
    args = _inputs(2, 9, 130, k_scale=3.0)
    grad_y = torch.randn(2, 9, 130, generator=torch.Generator().manual_seed(4))
    y_eager, grads_eager = _value_and_grads(fn, args, grad_y)
    y_comp, grads_comp = _value_and_grads(compiled, args, grad_y)
    assert torch.allclose(y_comp, y_eager, rtol=1e-6, atol=1e-6)
    for got, expected in zip(grads_comp, grads_eager):
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)
    # The ops registered with torch.library pass its consistency checks (fake impl, schema, autograd).
    td, tf, k, v = _inputs(2, 4, 6)
    torch.library.opcheck(wkv_ext.wkv_forward_op, [t.requires_grad_() for t in (td.exp(), tf, k, v)])
