"""Compiled CPU kernel of the WKV operator (``wkv_cpu.cpp``), built at setup time or, failing that, on first use.

:func:`wkv_cpu` has the contract of :func:`sdit.models.wkv.wkv` and runs the same
stable recurrence, clamps included, as one compiled loop per (batch, channel block)
instead of ~15 tensor operations per token (single-threaded, (256, 100, 128)
float32, AVX-512: ~10x faster forward, ~7x forward+backward).

Build. The compiled library is named ``sdit_wkv_cpu_<key>``, the key a hash of the
source, the flags, the source's path, torch's version and Python's version, so a changed
source, another checkout or another environment gets its own library instead of
rebuilding over a shared one. :func:`load_extension` looks for it, in order, in

1. the environment: ``<sys.prefix>/share/sdit/torch_extensions/<name>/`` (:func:`prebuilt_dir`),
   where ``scripts/setup.sh`` builds it once with ``python -m sdit.build_ext``;
2. the cache: ``$TORCH_EXTENSIONS_DIR/<name>/``, default ``~/.cache/sdit/torch_extensions`` (:func:`cache_dir`);

and imports the ``.so`` it finds there directly (no compiler, no ninja run). Only where
neither holds it does it build (needs g++ and ninja; ninja from the ``ninja`` wheel is
found next to the interpreter even when the venv is not activated) into the cache,
saying so first on stderr in one line. A build goes into a temporary directory that is
renamed into place when complete, so an interrupted build never leaves a library that
looks finished. A failed build is remembered and reported by :func:`extension_status`
(one line) and :func:`extension_error` (full text); nothing is raised at import or load.
:func:`extension_path` names the library loaded. ``SDIT_WKV_EXT=0`` in the environment
disables the extension (checked on every call).

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
import subprocess
import sys
import tempfile
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
    path: Path | None = None  # the shared library loaded
    built: bool = False  # whether this process compiled it
    error: str | None = None  # full text of the failure
    lock: threading.Lock = field(default_factory=threading.Lock)


_state = _State()

BUILD_NOTICE = "sdit: building the WKV kernel (one time, ~40 s; SDIT_WKV_EXT=0 skips it) in {where}"


def _disabled() -> bool:
    return os.environ.get(ENV_VAR, "").strip() == "0"


def _extension_name() -> str:
    """``sdit_wkv_cpu_<key>``: the key hashes what the library depends on (source, flags, path, torch, Python)."""
    digest = hashlib.sha256(_SOURCE.read_bytes())
    digest.update(" ".join(_CFLAGS + _LDFLAGS).encode())
    digest.update(str(_SOURCE.resolve()).encode())
    digest.update(f"torch {torch.__version__} python {sys.version} {sys.implementation.cache_tag}".encode())
    return f"sdit_wkv_cpu_{digest.hexdigest()[:12]}"


def prebuilt_dir() -> Path:
    """Where ``python -m sdit.build_ext`` puts the library: inside the environment (``sys.prefix``)."""
    return Path(sys.prefix) / "share" / "sdit" / "torch_extensions"


def cache_dir() -> Path:
    """Where a build at run time goes: ``$TORCH_EXTENSIONS_DIR``, else ``~/.cache/sdit/torch_extensions``."""
    explicit = os.environ.get("TORCH_EXTENSIONS_DIR", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "") or "~/.cache").expanduser() / "sdit" / "torch_extensions"


def _library(root: Path, name: str) -> Path:
    return root / name / f"{name}.so"


def _import_library(name: str, path: Path) -> ModuleType:
    """Import the compiled module at ``path`` (no build step)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def build(root: Path, name: str | None = None) -> Path:
    """Compile the kernel into ``root/<name>/`` and return the library's path; no-op if it is there.

    The build runs in a temporary sibling directory renamed into place at the end, so a
    directory named ``<name>`` always holds a finished library. Another process finishing
    first wins; its library is used.

    Raises:
        Exception: whatever the compiler or ``torch.utils.cpp_extension`` raises.
    """
    name = name or _extension_name()
    final = _library(root, name)
    if final.exists():
        return final
    _ensure_ninja_on_path()
    from torch.utils import cpp_extension

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide a shared environment's library from other users
    try:
        # is_python_module=False: build (and dlopen) without importing; the import is from the final path.
        cpp_extension.load(
            name=name,
            sources=[str(_SOURCE)],
            extra_cflags=list(_CFLAGS),
            extra_ldflags=list(_LDFLAGS),
            build_directory=str(tmp),
            is_python_module=False,
            verbose=False,
        )
        try:
            os.replace(tmp, final.parent)
        except OSError:
            if not final.exists():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:300] if lines else "(no message)"


def _load(state: _State) -> None:
    name = _extension_name()
    for root in (prebuilt_dir(), cache_dir()):
        path = _library(root, name)
        if path.exists():
            state.module, state.name, state.path = _import_library(name, path), name, path
            return
    root = cache_dir()
    print(BUILD_NOTICE.format(where=root), file=sys.stderr, flush=True)
    path = build(root, name)
    state.module, state.name, state.path, state.built = _import_library(name, path), name, path, True


def load_extension() -> ModuleType | None:
    """The compiled module (prebuilt, cached, or built now), or None if disabled or the build failed.

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
                _load(state)
            except Exception as exc:  # any build or load failure is reported, not raised
                state.error = f"{type(exc).__name__}: {exc}"
    return state.module


def extension_path() -> Path | None:
    """The shared library :func:`load_extension` loaded, or None (not loaded, disabled or failed)."""
    return _state.path


def built_here() -> bool:
    """Whether this process compiled the library (False when it was prebuilt or cached)."""
    return _state.built


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


def main(argv: list[str] | None = None) -> int:
    """``python -m sdit.build_ext``: build the kernel into the environment (setup time), print where.

    Returns:
        0 when the library is there (built now or before), 1 when the build failed
        (one line on stderr), 2 for bad arguments.
    """
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m sdit.build_ext",
        description="Build sdit's C++ WKV kernel once, into the environment, so no command builds it at first use.",
    )
    parser.add_argument("--dir", type=Path, default=None, help=f"target directory (default {prebuilt_dir()})")
    args = parser.parse_args(argv)
    root = args.dir or prebuilt_dir()
    name = _extension_name()
    if _library(root, name).exists():
        print(f"WKV kernel already built: {_library(root, name)}")
        return _build_cpu_kernels(root)
    print(BUILD_NOTICE.format(where=root), file=sys.stderr, flush=True)
    try:
        path = build(root, name)
        module = _import_library(name, path)
    except Exception as exc:  # reported in one line; the runtime falls back to the tensor-op loop
        print(f"error: building the WKV kernel failed ({_one_line(f'{type(exc).__name__}: {exc}')}); "
              f"sdit will use the slower tensor-op loop", file=sys.stderr)
        return 1
    print(f"WKV kernel built: {path} ({module.isa()})")
    return _build_cpu_kernels(root)


def _build_cpu_kernels(root: Path) -> int:
    """Build the small C kernels (LIF, token-shift mixes) beside the WKV kernel; 1 with one line if they fail."""
    from sdit.models import cpu_kernels

    try:
        path = cpu_kernels.build_into(root)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        print(f"error: building the C kernels failed ({_one_line(f'{type(exc).__name__}: {exc}')}); "
              f"sdit will use spikingjelly's LIF and tensor ops", file=sys.stderr)
        return 1
    print(f"C kernels (LIF, token-shift mixes): {path}")
    return 0
