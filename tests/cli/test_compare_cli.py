from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()
ARGS = ["compare", "sdit-tiny", "dit-tiny", "--sample-steps", "2", "--samples", "4"]


def test_compare_writes_report_json_and_csv_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    result = runner.invoke(app, [*ARGS, "--costs", "45nm-int8", "--costs", "45nm-fp32", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == f"report: {out / 'report.html'}"
    data = json.loads((out / "comparison.json").read_text())
    assert [t["name"] for t in data["targets"]] == ["sdit-tiny", "dit-tiny"]
    assert [c["name"] for c in data["costs"]] == ["45nm-int8", "45nm-fp32"]
    assert list(data["conventions"]) == ["paper", "strict", "block", "spikformer"]
    assert data["workload"] == {"kind": "ddim", "timestep": None, "steps": 2, "eta": 1.0, "batch_size": 1, "seed": 0}
    comp = pd.read_csv(out / "tables" / "comparison.csv").set_index("model")
    assert comp.loc["dit-tiny", "macs_per_image_strict"] == 2 * 499_712
    assert comp.loc["dit-tiny", "energy_uJ_per_image_strict_45nm-int8"] == pytest.approx(2 * 499_712 * 0.23e-6)
    html = (out / "report.html").read_text()
    embedded = json.loads(re.search(r'id="sdit-data">(.*?)</script>', html, re.S).group(1))
    assert embedded["comparison"] == data
    assert 'alt="samples of sdit-tiny"' in html and 'alt="samples of dit-tiny"' in html
    before = (out / "report.html").read_bytes()
    again = runner.invoke(app, [*ARGS, "--out", str(out)])
    assert again.exit_code == 2
    assert again.stderr.strip() == (f"error: --out (report): {out / 'report.html'} exists; pass --overwrite "
                                    "to replace it")
    assert (out / "report.html").read_bytes() == before


def test_compare_bad_usage_is_one_line(tmp_path: Path) -> None:
    cases = {("sdit-tiny",): "error: compare needs two or more targets",
             ("sdit-tiny", "dit-tiny", "--convention", "loose"): "error: --convention 'loose': valid conventions",
             ("sdit-tiny", "dit-tiny", "--costs", "7nm"): "error: --costs '7nm' is neither a preset",
             ("sdit-tiny", "dit-tiny", "--eta", "2"): "error: --eta must be <= 1, got 2",
             ("sdit-tiny", "sdit-tiny"): "error: each target may be named once"}
    for args, start in cases.items():
        result = runner.invoke(app, ["compare", *args, "--out", str(tmp_path / "x")])
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.strip().startswith(start), (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
