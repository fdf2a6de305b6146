"""`sdit report`: saved studies, merged, give the report `sdit compare` wrote; other workloads are refused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from sdit import checkpoint
from sdit.checkpoint import CheckpointMeta
from sdit.config import get_preset
from sdit.models import build_model

runner = CliRunner()
COMPARE = ["--method", "forward", "--samples", "0", "--costs", "45nm-fp32", "--convention", "paper",
           "--convention", "strict", "--no-shipped-quality"]


def _checkpoint(directory: Path, preset: str, seed: int) -> str:
    """A run directory of ``preset`` with seeded weights (a preset's weights would depend on the process)."""
    torch.manual_seed(seed)
    model = build_model(preset)
    meta = CheckpointMeta(preset=preset, config=get_preset(preset), step=1, dataset="fashion-mnist", seed=seed,
                          git_revision="unknown")
    checkpoint.save_checkpoint(directory, meta, model.state_dict(), model.state_dict(), {})
    return str(directory)


def _figures(report: Path) -> list[str]:
    """The page's embedded data and every figure's spec, as the HTML holds them."""
    text = report.read_text()
    return re.findall(r'<script type="application/json" (?:id="sdit-data"|class="plot-spec"[^>]*)>(.*?)</script>',
                      text, re.S)


def _compare(out: Path, *targets: str, extra: tuple[str, ...] = ()) -> Path:
    result = runner.invoke(app, ["compare", *targets, *COMPARE, *extra, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out / "comparison.json"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("models")
    return [_checkpoint(root / "a", "sdit-tiny", 0), _checkpoint(root / "b", "dit-tiny", 1),
            _checkpoint(root / "c", "sdit-tiny-sd", 2)]


def test_two_saved_studies_give_the_report_of_one_compare_of_all(models: list[str], tmp_path: Path) -> None:
    a, b, c = models
    full = _compare(tmp_path / "full", a, b, c).parent
    first = _compare(tmp_path / "first", a, b)
    second = _compare(tmp_path / "second", c, b)  # the shared baseline b: in both, with the same numbers
    result = runner.invoke(app, ["report", str(first), str(second), "--out", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    assert "3 targets from 2 studies" in result.output
    merged = tmp_path / "merged"
    tables = sorted(p.name for p in (full / "tables").glob("*.csv"))
    assert tables and tables == sorted(p.name for p in (merged / "tables").glob("*.csv"))
    for name in tables:  # every table, byte for byte
        assert (merged / "tables" / name).read_bytes() == (full / "tables" / name).read_bytes(), name
    assert json.loads((merged / "comparison.json").read_text()) == json.loads((full / "comparison.json").read_text())
    assert _figures(merged / "report.html") == _figures(full / "report.html")  # the figures' data
    # One study alone gives back its own report's tables.
    alone = runner.invoke(app, ["report", str(first), "--out", str(tmp_path / "alone")])
    assert alone.exit_code == 0, alone.output
    for path in (first.parent / "tables").glob("*.csv"):
        assert (tmp_path / "alone" / "tables" / path.name).read_bytes() == path.read_bytes(), path.name


def test_studies_of_different_workloads_are_refused_in_one_line(models: list[str], tmp_path: Path) -> None:
    a, b, _ = models
    first = _compare(tmp_path / "first", a, b)
    other = _compare(tmp_path / "other", a, b, extra=("--timestep", "200"))
    result = runner.invoke(app, ["report", str(first), str(other), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("error: ")
    assert "studies of different workload (one forward at t=200" in result.output
    assert not (tmp_path / "r").exists()


def test_what_is_not_a_study_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"schema": "something else"}')
    (tmp_path / "y.json").write_text("[1, 2")
    for path, message in ((tmp_path / "x.json", "not an sdit comparison"), (tmp_path / "y.json", "not a saved study"),
                          (tmp_path / "none.json", "not a file")):
        result = runner.invoke(app, ["report", str(path), "--out", str(tmp_path / "r")])
        assert result.exit_code == 2 and message in result.output, result.output
        assert result.output.count("\n") == 1
