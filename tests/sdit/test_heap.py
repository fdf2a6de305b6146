"""sdit.heap: freed CPU memory stays in the process (glibc's mallopt), and SDIT_HEAP_RETAIN=0 opts out.

Each case runs in a fresh interpreter: the settings are process-wide and applied once.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Ten training steps of sdit-small at batch 8 (about 25,000 fresh pages a step under glibc's defaults on this
# machine): the minor page faults of each step, and the status line.
_PROBE = r"""
import json, resource, sys
import torch
from sdit.heap import heap_status, retain_freed_memory
status = retain_freed_memory() if sys.argv[1] == "apply" else heap_status()
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

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="mallopt and mallinfo2 are glibc's",
)


def _probe(mode: str, retain: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "SDIT_HEAP_RETAIN"}
    if retain is not None:
        env["SDIT_HEAP_RETAIN"] = retain
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], env=env, capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def _steady(faults: list[int]) -> float:
    return sorted(faults[3:])[len(faults[3:]) // 2]  # median after the warm-up steps


@glibc
def test_retained_heap_stops_the_page_faults_of_each_step() -> None:
    kept = _probe("apply", None)
    assert kept["status"] == "freed memory kept (mallopt: mmap threshold 32 MiB, trim threshold 2 GiB)"
    assert kept["again"] == kept["status"]  # applied once per process
    off = _probe("apply", "0")
    assert off["status"] == "glibc defaults (SDIT_HEAP_RETAIN=0)"
    # a step reuses the pages the last one freed: under 2,000 fresh pages (8 MiB), at most 1/5 of glibc's defaults
    assert _steady(kept["faults"]) < 2_000, kept["faults"]
    assert _steady(kept["faults"]) * 5 <= _steady(off["faults"]), (kept["faults"], off["faults"])


@glibc
def test_status_before_it_is_applied() -> None:
    assert _probe("status", None)["status"] == "glibc defaults (not applied in this process)"


def test_library_import_does_not_apply_it() -> None:
    # importing sdit (as a notebook would) leaves the allocator alone; only the sdit command and the benches apply it
    out = subprocess.run(
        [sys.executable, "-c", "import sdit.train, sdit.models, profiling.workloads\n"
         "from sdit.heap import heap_status; print(heap_status())"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout  # fmt: skip
    assert out.strip().splitlines()[-1] == "glibc defaults (not applied in this process)"
    assert ctypes.util.find_library("c") or sys.platform != "linux"


@glibc
def test_the_sdit_command_applies_it_and_info_says_so() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "info", "dit-tiny", "--json", "-"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout  # fmt: skip
    assert json.loads(out)["heap"] == "freed memory kept (mallopt: mmap threshold 32 MiB, trim threshold 2 GiB)"
