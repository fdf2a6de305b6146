"""Small C kernels for the CPU (``cpu_kernels.c``): the LIF neuron, token-shift mixes and their backward,
relu(x)^2 and its backward, DiT's bias + GELU(tanh) and its backward, loaded with ctypes.

The C file needs no torch headers: ``python -m sdit.build_ext`` (run by
``scripts/setup.sh``) compiles it with the system C compiler (``cc``, about a second) into
the environment (``<sys.prefix>/share/sdit/torch_extensions``, beside the WKV kernel). When
it is not there, the first use compiles it into ``TORCH_EXTENSIONS_DIR`` (default
``~/.cache/torch_extensions``). Either way it is named by a hash of source and flags,
written atomically (a temporary file renamed into place), and loaded with ``ctypes``.
A failed build is remembered (:func:`extension_status`, one line) and the callers
fall back to tensor code; nothing is raised at import. ``SDIT_CPU_KERNELS=0``
disables the kernels (checked on every call). Callers wrap the functions in
``torch.library`` custom ops (``sdit.models.lif``, ``sdit.models.fused``).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

ENV_VAR = "SDIT_CPU_KERNELS"  # "0" disables the kernels

_SOURCE = Path(__file__).with_name("cpu_kernels.c")
# -ffp-contract=off: no implicit fused multiply-adds (bit-identical to the tensor ops; explicit fmaf where torch fuses).
# -fno-trapping-math: lets GCC vectorise the selects. -fopenmp: resolves to the libgomp torch has loaded.
_CFLAGS = ["-O3", "-shared", "-fPIC", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math", "-lm"]


@dataclass
class _State:
    """What the first load attempt found (one per process)."""

    lib: ctypes.CDLL | None = None
    name: str | None = None
    error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


_state = _State()


def _disabled() -> bool:
    return os.environ.get(ENV_VAR, "").strip() == "0"


def library_name() -> str:
    """The library's file stem: a hash of the C source and the compiler flags."""
    digest = hashlib.sha256(_SOURCE.read_bytes())
    digest.update(" ".join(_CFLAGS).encode())
    return f"sdit_cpu_kernels_{digest.hexdigest()[:12]}"


def _cache_dir() -> Path:
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "torch_extensions")
    return Path(root)


def _prebuilt_dir() -> Path:
    """Where ``python -m sdit.build_ext`` puts the library: inside the environment, as the WKV kernel."""
    return Path(sys.prefix) / "share" / "sdit" / "torch_extensions"


def _build(name: str, root: Path | None = None) -> Path:
    """Compile ``cpu_kernels.c`` into ``root`` (default: the environment's prebuilt copy if there, else
    the cache), atomically: a temporary file renamed into place."""
    if root is None:
        prebuilt = _prebuilt_dir() / f"{name}.so"
        if prebuilt.exists():
            return prebuilt
        root = _cache_dir()
    target = root / f"{name}.so"
    if target.exists():
        return target
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc or gcc) on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        proc = subprocess.run([compiler, *_CFLAGS, str(_SOURCE), "-o", tmp], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{compiler} failed ({proc.returncode}): {proc.stderr.strip()}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def build_into(root: Path) -> Path:
    """Compile the kernels into ``root`` (setup time) and return the library's path; no-op if there.

    Raises:
        RuntimeError: no C compiler, or the compiler failed (its stderr in the message).
    """
    return _build(library_name(), root)


def load() -> ctypes.CDLL | None:
    """The loaded library (built on first call), or None when it cannot build."""
    with _state.lock:
        if _state.lib is not None or _state.error is not None:
            return _state.lib
        try:
            name = library_name()
            lib = ctypes.CDLL(str(_build(name)))
            f32, i64, ptr = ctypes.c_float, ctypes.c_int64, ctypes.c_void_p
            lib.sdit_lif_forward.argtypes = [ptr, ptr, ptr, ptr, ptr, i64, i64, f32, f32, f32, f32, ctypes.c_int]
            lib.sdit_lif_forward.restype = None
            lib.sdit_lif_backward.argtypes = [ptr, ptr, ptr, ptr, ptr, i64, i64, f32, f32, f32, f32, ctypes.c_int]
            lib.sdit_lif_backward.restype = None
            lib.sdit_shift_mixes.argtypes = [ptr, ptr, ptr, i64, i64, i64, i64, ctypes.c_int]
            lib.sdit_shift_mixes.restype = None
            lib.sdit_shift_mixes_backward.argtypes = [ptr, ptr, ctypes.POINTER(ptr), ptr, ptr, i64, i64, i64, i64,
                                                      ctypes.c_int]
            lib.sdit_shift_mixes_backward.restype = ctypes.c_int
            lib.sdit_relu_square.argtypes = [ptr, ptr, i64, ctypes.c_int]
            lib.sdit_relu_square.restype = None
            lib.sdit_relu_square_backward.argtypes = [ptr, ptr, ptr, i64, ctypes.c_int]
            lib.sdit_relu_square_backward.restype = None
            lib.sdit_bias_gelu.argtypes = [ptr, ptr, ptr, i64, i64, ctypes.c_int]
            lib.sdit_bias_gelu.restype = None
            lib.sdit_bias_gelu_backward.argtypes = [ptr, ptr, ptr, ptr, ptr, i64, i64, ctypes.c_int]
            lib.sdit_bias_gelu_backward.restype = ctypes.c_int
            lib.sdit_norm_modulate.argtypes = [ptr, ptr, ptr, ptr, i64, i64, i64, f32, ctypes.c_int]
            lib.sdit_norm_modulate.restype = None
            _state.lib, _state.name = lib, name
        except (OSError, RuntimeError, subprocess.SubprocessError) as err:
            _state.error = f"{type(err).__name__}: {err}"
        return _state.lib


def available() -> bool:
    """True when the kernels are enabled and built (builds them on first call)."""
    if _disabled():
        return False
    if _state.lib is not None or _state.error is not None:  # decided: no lock (torch.compile traces this)
        return _state.lib is not None
    return load() is not None


def extension_status() -> str:
    """One line: whether the kernels run (LIF, token-shift mixes) or the tensor-code fallbacks."""
    if _disabled():
        return f"disabled ({ENV_VAR}=0): spikingjelly's LIF, tensor ops"
    if load() is not None:
        return f"C kernels ({_state.name})"
    return f"build failed, spikingjelly's LIF, tensor ops: {(_state.error or '').splitlines()[0]}"


def ptr_array(tensors: list[Tensor]) -> ctypes.Array:
    """A C array of the tensors' data pointers (``const float *const *``)."""
    return (ctypes.c_void_p * len(tensors))(*(t.data_ptr() for t in tensors))


def ptr(t: Tensor | None) -> int | None:
    """A tensor's data pointer for ctypes (None for None)."""
    return None if t is None else t.data_ptr()
