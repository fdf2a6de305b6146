"""Compiled CPU kernel of the WKV operator (``wkv_cpu.cpp``), built on first use.

:func:`wkv_cpu` has the contract of :func:`sdit.models.wkv.wkv` and runs the same
stable recurrence, clamps included, as one compiled loop per (batch, channel block)
instead of ~15 tensor operations per token (single-threaded, (256, 100, 128)
float32, AVX-512: ~10x faster forward, ~7x forward+backward).

Build. :func:`load_extension` compiles ``wkv_cpu.cpp`` with
``torch.utils.cpp_extension.load`` on first call (needs g++ and ninja; ninja from
the ``ninja`` wheel is found next to the interpreter even when the venv is not
activated), into torch's extension cache (``TORCH_EXTENSIONS_DIR``, default
``~/.cache/torch_extensions``). The module name carries a hash of the source and
flags, so a changed source builds anew instead of loading a stale library. A
failed build is remembered and reported by :func:`extension_status` (one line)
and :func:`extension_error` (full text); nothing is raised at import or load.
``SDIT_WKV_EXT=0`` in the environment disables the extension (checked on every
call).

Ops. The kernels are registered as ``torch.ops.sdit.wkv_forward`` and
``torch.ops.sdit.wkv_backward`` (``torch.library.custom_op``) with shape-only fake
implementations and an autograd formula, so :func:`wkv_cpu` runs eagerly and under
``torch.compile`` (no graph break). The forward op takes ``w = exp(time_decay)``;
autograd through that ``exp`` gives dL/dtime_decay = w dL/dw. Only w, u, k, v and
the output are saved for the backward pass, which recomputes the per-token states.
"""

import hashlib
import os
import shutil
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

ENV_VAR = "SDIT_WKV_EXT"  # "0" disables the extension

_SOURCE = Path(__file__).with_name("wkv_cpu.cpp")
# -fopenmp: at::parallel_for is header code that is serial unless compiled with
# OpenMP (the library resolves to the libgomp torch already loaded).
# -fno-trapping-math: lets GCC vectorise the selects (see wkv_cpu.cpp).
_CFLAGS = ["-O3", "-fopenmp", "-fno-trapping-math"]
_LDFLAGS = ["-fopenmp"]


@dataclass
class _State:
    """What the first load attempt found (one per process)."""

    module: ModuleType | None = None
    name: str | None = None
    error: str | None = None  # full text of the failure
    lock: threading.Lock = field(default_factory=threading.Lock)


_state = _State()


def _disabled() -> bool:
    return os.environ.get(ENV_VAR, "").strip() == "0"


def _extension_name() -> str:
    digest = hashlib.sha256(_SOURCE.read_bytes())
    digest.update(" ".join(_CFLAGS + _LDFLAGS).encode())
    return f"sdit_wkv_cpu_{digest.hexdigest()[:12]}"


def _ensure_ninja_on_path() -> None:
    """Append the ``ninja`` wheel's directory to PATH if no ninja is on it (unactivated venv)."""
    if shutil.which("ninja") is not None:
        return
    dirs = [str(Path(sys.executable).parent)]
    try:
        import ninja  # the PyPI wheel

        dirs.insert(0, str(ninja.BIN_DIR))
    except (ImportError, AttributeError):
        pass
    for directory in dirs:
        if shutil.which("ninja", path=directory) is not None:
            os.environ["PATH"] = os.environ.get("PATH", "") + os.pathsep + directory
            return


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:300] if lines else "(no message)"


def load_extension() -> ModuleType | None:
    """The compiled module (building it on first call), or None if disabled or the build failed.

    Never raises; :func:`extension_status` says why it is None.
    """
    if _disabled():
        return None
    state = _state
    if state.module is not None or state.error is not None:
        return state.module
    with state.lock:
        if state.module is None and state.error is None:
            try:
                _ensure_ninja_on_path()
                from torch.utils import cpp_extension

                name = _extension_name()
                module = cpp_extension.load(
                    name=name,
                    sources=[str(_SOURCE)],
                    extra_cflags=list(_CFLAGS),
                    extra_ldflags=list(_LDFLAGS),
                    verbose=False,
                )
            except Exception as exc:  # any build or load failure is reported, not raised
                state.error = f"{type(exc).__name__}: {exc}"
            else:
                state.module, state.name = module, name
    return state.module


def extension_status() -> str:
    """One line: ``compiled (<module name>, <ISA>)``, ``disabled by SDIT_WKV_EXT=0`` or ``unavailable: <reason>``.

    Builds the extension if no attempt was made yet.
    """
    if _disabled():
        return f"disabled by {ENV_VAR}=0"
    module = load_extension()
    if module is None:
        return f"unavailable: {_one_line(_state.error or '')}"
    return f"compiled ({_state.name}, {module.isa()})"


def extension_error() -> str | None:
    """Full text of the build/load failure (compiler output included), or None."""
    return _state.error


@torch.compiler.assume_constant_result
def available() -> bool:
    """Whether :func:`wkv_cpu` can run (extension enabled and built); constant under ``torch.compile``."""
    return load_extension() is not None


def _require() -> ModuleType:
    module = load_extension()
    if module is None:
        raise RuntimeError(f"sdit WKV CPU extension is {extension_status()}")
    return module


@torch.library.custom_op("sdit::wkv_forward", mutates_args=())
def wkv_forward_op(w: Tensor, u: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """WKV forward on w = exp(time_decay) (D,), u (D,), k, v (B, N, D); all CPU, one float dtype."""
    return _require().forward(w, u, k, v)


@wkv_forward_op.register_fake
def _wkv_forward_fake(w: Tensor, u: Tensor, k: Tensor, v: Tensor) -> Tensor:
    return k.new_empty(k.shape)


@torch.library.custom_op("sdit::wkv_backward", mutates_args=())
def wkv_backward_op(
    w: Tensor, u: Tensor, k: Tensor, v: Tensor, y: Tensor, grad_y: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients (wrt w, u, k, v; w and u summed over the batch) of :func:`wkv_forward_op` given its output y."""
    grad_w, grad_u, grad_k, grad_v = _require().backward(w, u, k, v, y, grad_y)
    return grad_w, grad_u, grad_k, grad_v


@wkv_backward_op.register_fake
def _wkv_backward_fake(
    w: Tensor, u: Tensor, k: Tensor, v: Tensor, y: Tensor, grad_y: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return w.new_empty(w.shape), u.new_empty(u.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs: tuple[Tensor, ...], output: Tensor) -> None:
    w, u, k, v = inputs
    ctx.save_for_backward(w, u, k, v, output)


def _backward(ctx, grad_y: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    w, u, k, v, y = ctx.saved_tensors
    return wkv_backward_op(w, u, k, v, y, grad_y)


wkv_forward_op.register_autograd(_backward, setup_context=_setup_context)


def wkv_cpu(time_decay: Tensor, time_first: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """WKV through the compiled CPU kernel; same contract as :func:`sdit.models.wkv.wkv`.

    Arguments time_decay, time_first (D,), k, v (B, N, D); returns (B, N, D) in the
    dtype of ``v``, computed in at least float32.

    Raises:
        RuntimeError: the extension is disabled or unavailable (see :func:`available`),
            or a tensor is not on the CPU.
    """
    out_dtype = v.dtype
    dtype = torch.promote_types(v.dtype, torch.float32)
    w = torch.exp(time_decay.to(dtype))  # (D,); autograd: dL/dtime_decay = w dL/dw
    y = wkv_forward_op(w, time_first.to(dtype), k.to(dtype), v.to(dtype))
    return y.to(out_dtype)  # (B, N, D)
