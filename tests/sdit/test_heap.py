"""sdit.heap: freed CPU memory stays in the process (glibc's mallopt), and what opts out of it.

Each case runs in a fresh interpreter: the settings are process-wide and applied once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdit import heap

ROOT = Path(__file__).resolve().parents[2]

# Ten training steps of sdit-small at batch 8 (about 15,000-25,000 fresh pages a step under glibc's defaults
# on the 2-core VM): the minor page faults of each step, and the status line.
_PROBE = r"""
import json, resource, sys
import torch
from sdit.heap import retain_freed_memory
status = retain_freed_memory()
from sdit.diffusion import Diffusion
from sdit.models import build_model
torch.manual_seed(0)
torch.set_num_threads(1)
model, diffusion = build_model("sdit-small"), Diffusion()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
x0 = torch.randn(8, 1, 28, 28)
faults = []
for _ in range(10):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    opt.zero_grad(set_to_none=True)
    diffusion.loss(model, x0).backward()
    opt.step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print(json.dumps({"status": status, "again": retain_freed_memory(), "faults": faults}))
"""

_OURS = ("SDIT_HEAP_RETAIN", "SDIT_TEST_HEAP_RETAINED", "GLIBC_TUNABLES", "LD_PRELOAD", *heap._USER_MALLOC_VARS)

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="mallopt is glibc's",
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _OURS}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def _run(args: list[str], **extra: str) -> str:
    return subprocess.run(
        [sys.executable, *args], env=_env(**extra), capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout


def _probe(**extra: str) -> dict:
    return json.loads(_run(["-c", _PROBE], **extra).strip().splitlines()[-1])


def _steady(faults: list[int]) -> float:
    return sorted(faults[3:])[len(faults[3:]) // 2]  # median after the warm-up steps


@glibc
def test_retained_heap_stops_the_page_faults_of_each_step() -> None:
    kept = _probe()
    assert kept["status"] == "freed memory kept (mallopt: mmap threshold 32 MiB, trimming off)"
    assert kept["again"] == kept["status"]  # applied once per process
    off = _probe(SDIT_HEAP_RETAIN="0")
    assert off["status"] == "glibc defaults (SDIT_HEAP_RETAIN=0)"
    # a step reuses the pages the last one freed: under 2,000 fresh pages (8 MiB), at most 1/5 of glibc's defaults
    assert _steady(kept["faults"]) < 2_000, kept["faults"]
    assert _steady(kept["faults"]) * 5 <= _steady(off["faults"]), (kept["faults"], off["faults"])


@glibc
def test_c_kernels_agree_with_tensor_ops_on_recycled_garbage_memory() -> None:
    # MALLOC_PERTURB_ fills every block malloc hands out with a byte pattern (and freed ones with another), and
    # the kept heap recycles blocks: a kernel that read an output buffer before writing all of it would differ.
    tests = ["tests/sdit/test_fast_paths.py", "tests/sdit/test_fused.py", "tests/sdit/test_wkv_ext.py"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
        env=_env(SDIT_TEST_HEAP_RETAINED="1", MALLOC_PERTURB_="165"), capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.strip().splitlines()[-1]


def test_status_before_it_is_applied_and_library_imports_leave_it() -> None:
    # importing sdit (as a notebook would) leaves the allocator alone; the sdit command, bench/ and scripts/ apply it
    code = "import sdit.training.train, profiling.workloads\nfrom sdit.heap import heap_status\nprint(heap_status())"
    assert _run(["-c", code]).strip().splitlines()[-1] == "glibc defaults (not applied in this process)"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SDIT_HEAP_RETAIN": "0"}, "glibc defaults (SDIT_HEAP_RETAIN=0)"),
        ({"MALLOC_ARENA_MAX": "2"}, "the user's malloc settings (MALLOC_ARENA_MAX); not changed"),
        (
            {"MALLOC_TRIM_THRESHOLD_": "1", "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"},
            "the user's malloc settings (MALLOC_TRIM_THRESHOLD_, GLIBC_TUNABLES); not changed",
        ),
        ({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"}, None),  # not a malloc tunable
        ({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, "a preloaded allocator (jemalloc in LD_PRELOAD); not changed"),
        ({}, None),
    ],
)
def test_what_keeps_the_allocator_as_it_is(env: dict[str, str], expected: str | None) -> None:
    assert heap._user_choice(env) == expected


class _FakeLibc:
    def __init__(self, accepts: set[int]) -> None:
        self.accepts, self.calls = accepts, []
        outer = self

        class _Mallopt:
            argtypes: list = []
            restype = None

            def __call__(self, param: int, value: int) -> int:
                outer.calls.append((param, value))
                return int(param in outer.accepts)

        self.mallopt = _Mallopt()


def test_apply_sets_both_and_reports_a_refusal_or_a_missing_mallopt(monkeypatch: pytest.MonkeyPatch) -> None:
    both = _FakeLibc({-1, -3})
    monkeypatch.setattr(heap.ctypes, "CDLL", lambda name: both)
    assert heap._apply({}) == heap.KEPT
    assert sorted(both.calls) == [(-3, 32 * 2**20), (-1, -1)]  # M_MMAP_THRESHOLD 32 MiB, M_TRIM_THRESHOLD off
    monkeypatch.setattr(heap.ctypes, "CDLL", lambda name: _FakeLibc({-1}))
    assert heap._apply({}) == (
        "partly applied (mallopt refused the mmap threshold; holds: trimming off)"
    )
    monkeypatch.setattr(heap.ctypes, "CDLL", lambda name: object())  # macOS, musl: no mallopt
    assert heap._apply({}) == "allocator defaults (the C library has no mallopt: not glibc)"


@glibc
def test_the_sdit_command_applies_it_and_info_says_so() -> None:
    facts = json.loads(_run(["-m", "cli.main", "info", "dit-tiny", "--json", "-"]))
    assert facts["heap"] == "freed memory kept (mallopt: mmap threshold 32 MiB, trimming off)"
