from __future__ import annotations

import csv
import json
from pathlib import Path

from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def test_profile_json_and_csv(tmp_path: Path) -> None:
    out, table = tmp_path / "p.json", tmp_path / "p.csv"
    result = runner.invoke(app, ["profile", "sdit-tiny", "--method", "forward", "--json", str(out), "--csv", str(table),
                                 "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["per_image"]["macs"] == 5_860_528
    assert {"macs", "acs", "spikes"} <= set(data["per_image"])
    assert {"name", "kind", "macs", "acs", "spikes", "neurons"} <= set(data["layers"][0])
    assert "firing_rate" in data["conventions"] and data["unsupported_ops"] == []
    rows = list(csv.DictReader(table.open()))
    assert sum(int(r["macs"]) for r in rows) == 5_860_528
    assert "MACs (strict)" in result.stdout and "5,860,528" in result.stdout


def test_profile_sampling_run(tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    result = runner.invoke(app, ["profile", "dit-tiny", "--sample-steps", "3", "--eta", "0", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["workload"] == {"kind": "ddim", "timestep": None, "steps": 3, "eta": 0.0, "batch_size": 1, "seed": 0}
    assert len(data["steps"]) == 3 and data["per_image"]["macs"] == 3 * 499_712
    assert len(data["layer_steps"]) == 3 * len(data["layers"])
    assert "DDIM 3 steps, eta 0, batch 1, seed 0" in result.stdout


def test_profile_sampling_run_with_eta(tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    result = runner.invoke(app, ["profile", "dit-tiny", "--sample-steps", "2", "--eta", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["workload"]["eta"] == 1.0


def test_profile_eta_needs_a_ddim_run() -> None:
    result = runner.invoke(app, ["profile", "dit-tiny", "--method", "forward", "--eta", "1"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --eta applies to a sampling run, not to --method forward"
    result = runner.invoke(app, ["profile", "dit-tiny", "--method", "ddpm", "--eta", "1"])
    assert result.exit_code == 2 and result.stderr.strip() == "error: --eta applies to DDIM only; ddpm's noise is fixed"


def test_profile_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    out.write_text("keep me")
    result = runner.invoke(app, ["profile", "dit-tiny", "--json", str(out)])
    assert result.exit_code == 2 and "pass --overwrite" in result.stderr
    assert out.read_text() == "keep me"


def test_profile_bad_target_is_one_line() -> None:
    result = runner.invoke(app, ["profile", "no-such-thing"])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "neither a preset" in result.stderr


def test_several_targets_keep_one_json_each(tmp_path: Path) -> None:
    out = tmp_path / "profiles"
    args = ["profile", "sdit-tiny", "dit-tiny", "--method", "forward", "--json-dir", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["dit-tiny.json", "sdit-tiny.json"]
    alone = tmp_path / "alone.json"
    assert runner.invoke(app, ["profile", "dit-tiny", "--method", "forward", "--json", str(alone)]).exit_code == 0
    both, one = json.loads((out / "dit-tiny.json").read_text()), json.loads(alone.read_text())
    assert both["per_image"] == one["per_image"] and both["energy"] == one["energy"]
    again = runner.invoke(app, args)  # the files exist: refused before any counting, nothing replaced
    assert again.exit_code == 2 and "--overwrite" in again.stderr
    refused = runner.invoke(app, ["profile", "sdit-tiny", "dit-tiny", "--json", str(tmp_path / "x.json")])
    assert refused.exit_code == 2 and "pass --json-dir DIR" in refused.stderr
