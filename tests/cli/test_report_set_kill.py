"""A report set survives a real SIGKILL of the writer: the old set stays whole, the next writer cleans up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()
ARGS = ["compare", "sdit-tiny", "dit-tiny", "--method", "forward", "--samples", "0"]

# Runs sdit compare, but stops for good once the staged set holds the JSON and the tables (right before the page),
# so the parent can kill it there.
WRITER = """
import sys, time
from pathlib import Path
import reports.report as report
render = report.render_page
def render_then_hang(page):
    text = render(page)
    Path(sys.argv[1]).write_text("staged")
    time.sleep(600)
    return text
report.render_page = render_then_hang
from cli.main import app
app(sys.argv[2:], prog_name="sdit")
"""


def _files(root: Path) -> dict[Path, bytes]:
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_sigkill_while_the_set_is_staged_leaves_the_old_set_whole(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    assert runner.invoke(app, [*ARGS, "--out", str(out)]).exit_code == 0
    before = _files(out)
    flag = tmp_path / "staged"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), *sys.path])}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(flag), *ARGS, "--out", str(out), "--overwrite"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the writer never reached the page"
            time.sleep(0.05)
        staged = [p for p in tmp_path.iterdir() if ".staging-" in p.name]
        assert len(staged) == 1 and (staged[0] / "comparison.json").is_file()
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert _files(out) == before  # the old set, whole

    result = runner.invoke(app, [*ARGS, "--out", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [".cmp.sdit-report.lock", "cmp", "staged"]
    assert (out / "report.html").is_file() and (out / ".sdit-report").is_file()
