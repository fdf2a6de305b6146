from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def test_energy_measure_without_gpu_explains_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "e.json"
    result = runner.invoke(app, ["energy", "dit-tiny", "--measure", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["measured"] is None
    assert data["measured_reason"]
    assert data["estimated"]["compute_j"] == pytest.approx(499_712 * 4.6e-12)
    lines = [line for line in result.stdout.splitlines() if line.startswith("measured energy unavailable:")]
    assert len(lines) == 1 and data["measured_reason"] in lines[0]


def test_energy_with_costs_preset_and_baseline(tmp_path: Path) -> None:
    out = tmp_path / "e.json"
    result = runner.invoke(app, ["energy", "sdit-tiny", "--costs", "45nm-int8", "--baseline", "dit-tiny",
                                 "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["costs"]["name"] == "45nm-int8"
    assert data["estimated"]["mac_j"] == pytest.approx(5_860_528 * 0.23e-12)
    assert data["break_even"]["baseline_j"] == pytest.approx(499_712 * 0.23e-12)
    assert data["measured_reason"] == "not requested (pass --measure)"


def test_energy_bad_costs_is_one_line() -> None:
    result = runner.invoke(app, ["energy", "dit-tiny", "--costs", "45nm-fp64"])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: --costs '45nm-fp64' is neither a preset")
