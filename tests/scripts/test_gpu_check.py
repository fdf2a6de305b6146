"""bench/gpu_check.sh runs end to end on the CPU at tiny sizes, every step executed and passed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STEPS = ("wkv", "mfu", "energy", "energy-table", "evaluate", "resume", "same-fid")


def test_the_gpu_check_runs_every_step_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "check"
    env = {**os.environ, "SDIT_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--device", "cpu", "--out", str(out),
                           "--python", sys.executable], env=env, capture_output=True, text=True, timeout=580)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = (out / "summary.txt").read_text().splitlines()
    assert [line.split()[0] for line in summary] == list(STEPS)
    assert all(line.endswith("pass") for line in summary), summary
    assert "equal to the float64 CPU reference" in (out / "wkv.log").read_text()
    mfu = (out / "mfu.log").read_text()
    assert "dtype bf16" in mfu and all(f"{p} " in mfu for p in ("sdit-tiny", "dit-tiny"))
    assert "measured_uJ_per_image" in (out / "energy-table.log").read_text()
    assert "4 batches reused, 0 drawn" in (out / "resume.log").read_text()
    same_fid = (out / "same-fid.log").read_text()
    assert "2 processes: FID" in same_fid
    assert "measured over 2 processes" in same_fid or "measured energy unavailable: rank" in same_fid
