from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def test_info_json_sdit_mnist() -> None:
    result = runner.invoke(app, ["info", "sdit-mnist", "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["preset"] == "sdit-mnist"
    assert facts["params"] == facts["trainable_params"] == 11_657_486
    assert abs(facts["trainable_params"] / 11.67e6 - 1) < 0.005
    assert facts["wkv_kernel_cpu"].startswith("C++ kernel: compiled (sdit_wkv_cpu_")
    assert facts["cpu_kernels"].startswith("C kernels (sdit_cpu_kernels_")  # not the silent fallback


def test_info_json_dit_mnist() -> None:
    facts = json.loads(runner.invoke(app, ["info", "dit-mnist", "--json"]).stdout)
    assert facts["trainable_params"] == 13_845_508
    assert "wkv_kernel_cpu" not in facts and "cpu_kernels" not in facts  # DiT has no WKV, no LIF
    assert abs(facts["trainable_params"] / 13.86e6 - 1) < 0.005


def test_info_json_spike_driven_presets() -> None:
    for preset, params in (("sdit-small-sd", 799_430), ("sdit-mnist-sd", 11_685_568)):
        facts = json.loads(runner.invoke(app, ["info", preset, "--json"]).stdout)
        assert facts["trainable_params"] == params
        assert facts["config"]["spike_driven"] is True
        assert "docs/spike-driven.md" in facts["notes"]


def test_info_table() -> None:
    result = runner.invoke(app, ["info", "dit-small"])
    assert result.exit_code == 0
    assert "trainable params" in result.stdout and "977,168" in result.stdout


def test_unknown_preset_exits_2_with_one_line() -> None:
    result = runner.invoke(app, ["info", "sdit-huge", "--json"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: unknown preset 'sdit-huge'; valid presets: sdit-mnist")


def test_sample_writes_a_grid_and_never_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "grid.png"
    args = ["sample", "dit-tiny", "--out", str(out), "-n", "4", "--sample-steps", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    grid = np.asarray(Image.open(out))
    assert grid.shape == (2 + 2 * 30, 2 + 2 * 30)  # 2x2 grid of 28x28 with 2-pixel padding
    before = out.read_bytes()
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "pass --overwrite" in again.stderr
    assert out.read_bytes() == before
