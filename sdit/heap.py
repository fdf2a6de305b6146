"""Keep freed CPU memory in the process for the next step (glibc's ``mallopt``).

Why: on CPU, torch allocates every activation with ``malloc``. glibc serves a large
request from a fresh ``mmap`` (above its mmap threshold: 128 KiB at first, raised
on its own up to 32 MiB as large blocks are freed) and hands the heap's free top back
to the kernel once it exceeds the trim threshold (twice the mmap threshold), so a
training step or sampling forward keeps touching pages for the first time: a page
fault per 4 KiB page (a few us each on a VM). Measured on the 2-core development VM:
a warm sdit-small training step at batch 32 took about 75,000 minor page faults
(300 MiB of fresh pages) under glibc's defaults and under 1,000 with the settings
below; interleaved runs (2 threads, training paused) gave 0.78-0.87 s per step before
and 0.66-0.74 s after; sdit-small sampling and dit-small moved within the noise.

What :func:`retain_freed_memory` sets, once per process, before the work allocates:

- ``M_MMAP_THRESHOLD`` = 32 MiB (glibc's largest on 64-bit): requests up to 32 MiB
  come from the heap from the start. Larger ones are still mapped and unmapped each
  time (glibc does not allow a higher threshold);
- ``M_TRIM_THRESHOLD`` = -1, which mallopt(3) documents as "disables trimming
  completely": the heap never hands its free top back, so the process keeps the
  high-water mark of its heap (as torch's CUDA caching allocator does on a GPU).

It changes where memory comes from, not what a kernel computes (``tests/sdit/test_heap.py``
runs the C kernels' parity tests on recycled, garbage-filled memory). ``SDIT_HEAP_RETAIN=0``
leaves glibc's defaults; so does a user's own malloc tuning (``MALLOC_*_`` variables,
``glibc.malloc`` tunables) or a preloaded allocator (jemalloc, tcmalloc, mimalloc), which
win over these settings. Without glibc's ``mallopt`` (macOS, musl) it does nothing and says
so. Called by the ``sdit`` command, the bench scripts and ``scripts/``; library code never calls
it (a notebook that imports ``sdit`` keeps its process's allocator as it was).
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Mapping

ENV_VAR = "SDIT_HEAP_RETAIN"  # "0" keeps glibc's defaults

# glibc's <malloc.h> parameter numbers
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 2**20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
TRIM_OFF = -1  # mallopt(3): "Setting M_TRIM_THRESHOLD to -1 disables trimming completely"

KEPT = "freed memory kept (mallopt: mmap threshold 32 MiB, trimming off)"
NOT_APPLIED = "glibc defaults (not applied in this process)"

_USER_MALLOC_VARS = (
    "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_", "MALLOC_ARENA_MAX",
)  # fmt: skip
_PRELOADED_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")

_lock = threading.Lock()
_status: str | None = None


def _user_choice(env: Mapping[str, str]) -> str | None:
    """Why the user's environment should keep the allocator as it is, or None."""
    if env.get(ENV_VAR, "").strip() == "0":
        return f"glibc defaults ({ENV_VAR}=0)"
    tuned = [name for name in _USER_MALLOC_VARS if env.get(name)]
    if "glibc.malloc." in env.get("GLIBC_TUNABLES", ""):
        tuned.append("GLIBC_TUNABLES")
    if tuned:
        return f"the user's malloc settings ({', '.join(tuned)}); not changed"
    preload = env.get("LD_PRELOAD", "")
    for allocator in _PRELOADED_ALLOCATORS:
        if allocator in preload:
            return f"a preloaded allocator ({allocator} in LD_PRELOAD); not changed"
    return None


def _apply(env: Mapping[str, str]) -> str:
    reason = _user_choice(env)
    if reason is not None:
        return reason
    try:
        mallopt = ctypes.CDLL(None).mallopt  # this process's own C library
    except (OSError, AttributeError, TypeError):
        return "allocator defaults (the C library has no mallopt: not glibc)"
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mmap_ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    trim_ok = mallopt(_M_TRIM_THRESHOLD, TRIM_OFF) == 1
    if mmap_ok and trim_ok:
        return KEPT
    held = [text for ok, text in ((mmap_ok, "mmap threshold 32 MiB"), (trim_ok, "trimming off")) if ok]
    refused = [text for ok, text in ((mmap_ok, "mmap threshold"), (trim_ok, "trim threshold")) if not ok]
    return f"partly applied (mallopt refused the {' and '.join(refused)}; holds: {', '.join(held) or 'nothing'})"


def retain_freed_memory() -> str:
    """Apply the settings above once per process; returns one line saying what holds."""
    global _status
    with _lock:
        if _status is None:
            _status = _apply(os.environ)
        return _status


def heap_status() -> str:
    """What :func:`retain_freed_memory` did in this process, or that it has not run."""
    return _status if _status is not None else NOT_APPLIED
