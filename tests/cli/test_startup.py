"""The command starts light: ``--version`` and ``--help`` load neither torch nor the library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import COMMANDS, app

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_version_and_help_import_no_torch(flag: str) -> None:
    code = ("import sys\nfrom cli.main import app\n"
            f"try:\n    app(['{flag}'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'pandas', 'profiling', 'sdit.models') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={"PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_help_lists_every_command_with_its_docstring_line() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in COMMANDS:
        assert f" {name} " in result.stdout
    assert "Count MACs, ACs and spikes per layer and per image." in result.stdout
    run = CliRunner().invoke(app, ["info", "sdit-tiny"])  # a listed command still runs
    assert run.exit_code == 0 and "61,083" in run.stdout
