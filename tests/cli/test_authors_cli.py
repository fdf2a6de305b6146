"""The authors' checkpoints through the CLI: info, profile, sample, convert, table3."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()
DATA = Path(__file__).resolve().parents[1] / "data" / "authors-sdit"


@pytest.fixture(scope="module")
def authors_pt(tmp_path_factory) -> Path:
    """A checkpoint in the authors' format, from the tiny fixture weights."""
    path = tmp_path_factory.mktemp("authors") / "00099.pt"
    torch.save({"model": load_file(DATA / "tiny.safetensors"), "opt": {"state": {}, "param_groups": []},
                "args": argparse.Namespace(dataset="MNIST", global_seed=0, epochs=1600)}, path)
    return path


@pytest.mark.parametrize(("preset", "fixture", "trainable"), [
    ("sdit-mnist-authors", "state-keys-mnist.json", 11_667_259),
    ("sdit-cifar-authors", "state-keys-cifar.json", 36_052_047),
])
def test_info_json_counts_and_authors_keys(preset: str, fixture: str, trainable: int) -> None:
    result = runner.invoke(app, ["info", preset, "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["trainable_params"] == facts["params"] == trainable
    listed = json.loads((DATA / fixture).read_text())["state_dict"]
    assert facts["authors_state_dict"] == [{"key": e["key"], "shape": e["shape"]} for e in listed]
    assert "authors" in facts["notes"]


def test_profile_an_authors_checkpoint(tmp_path: Path, authors_pt: Path) -> None:
    out = tmp_path / "p.json"
    result = runner.invoke(app, ["profile", str(authors_pt), "--method", "forward", "--json", str(out), "--strict"])
    assert result.exit_code == 0, result.output
    profile = json.loads(out.read_text())
    assert profile["per_image"]["macs"] == 1_946_560  # the closed form of tests/profiling/test_table3.py
    assert profile["per_image"]["acs"] == 0
    assert profile["per_image"]["spikes"] > 0  # the fixture weights fire
    assert profile["unsupported_ops"] == []


def test_sample_an_authors_checkpoint_with_their_sampler(tmp_path: Path, authors_pt: Path) -> None:
    grid, tensors = tmp_path / "g.png", tmp_path / "s.safetensors"
    result = runner.invoke(app, ["sample", str(authors_pt), "--out", str(grid), "-n", "3", "--method",
                                 "ddpm-respaced", "--sample-steps", "3", "--labels", "3,5", "--tensor", str(tensors)])
    assert result.exit_code == 0, result.output
    assert "respaced ddpm, 3 steps, learned variance, labels 3,5,3" in result.stdout
    assert "authors' checkpoint 00099.pt (sdit-tiny-authors" in result.stdout
    samples = load_file(tensors)["samples"]
    assert samples.shape == (3, 3, 28, 28) and torch.isfinite(samples).all()
    bad = runner.invoke(app, ["sample", str(authors_pt), "--out", str(tmp_path / "h.png"), "--labels", "12"])
    assert bad.exit_code == 2 and "classes in 0..9" in bad.stderr


def test_a_code_payload_is_refused_by_every_command(tmp_path: Path) -> None:
    target = tmp_path / "created-by-payload"

    class Payload:
        def __reduce__(self):
            return (open, (str(target), "w"))

    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "opt": {}, "args": Payload()}, evil)
    for args in (["profile", str(evil)], ["sample", str(evil), "--out", str(tmp_path / "x.png")],
                 ["convert", str(evil), str(tmp_path / "x.safetensors")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output  # bad input file
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "refused" in lines[0]
    assert not target.exists()


def test_convert_then_profile_our_file(tmp_path: Path, authors_pt: Path) -> None:
    dst = tmp_path / "tiny.safetensors"
    result = runner.invoke(app, ["convert", str(authors_pt), str(dst)])
    assert result.exit_code == 0, result.output
    assert "sdit-tiny-authors layout" in result.stdout
    again = runner.invoke(app, ["convert", str(authors_pt), str(dst)])
    assert again.exit_code == 2 and "pass --overwrite" in again.stderr
    out = tmp_path / "p.json"
    assert runner.invoke(app, ["profile", str(dst), "--method", "forward", "--json", str(out)]).exit_code == 0
    assert json.loads(out.read_text())["per_image"]["macs"] == 1_946_560
    weights = load_file(DATA / "tiny.safetensors")
    weights["in_blocks.0.att.key.weight"] = torch.full_like(weights["in_blocks.0.att.key.weight"], float("nan"))
    bad = tmp_path / "nan.pt"
    torch.save({"model": weights, "opt": {}, "args": argparse.Namespace()}, bad)
    before = dst.read_bytes()
    refused = runner.invoke(app, ["convert", str(bad), str(dst), "--overwrite"])
    assert refused.exit_code == 2 and "NaN or infinite" in refused.stderr
    assert dst.read_bytes() == before  # the good file is untouched


def test_table3_formats(tmp_path: Path) -> None:
    md, js = tmp_path / "t.md", tmp_path / "t.json"
    args = ["table3", "--dit", "dit-tiny", "--sdit", "sdit-tiny", "--sdit-authors", "sdit-tiny-authors"]
    result = runner.invoke(app, [*args, "--markdown", str(md), "--json", str(js)])
    assert result.exit_code == 0, result.output
    assert "Which convention reproduces each figure" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    data = json.loads(js.read_text())
    assert [m["name"] for m in data["models"]] == ["dit-tiny", "sdit-tiny", "sdit-tiny-authors"]
    assert data["models"][2]["counts"]["dense_one_t"] == 1_946_560
    assert md.read_text().startswith("## Table III")
    printed = runner.invoke(app, [*args, "--format", "json"])
    assert json.loads(printed.stdout)["models"][2]["strict_acs"] == 0
    assert runner.invoke(app, [*args, "--format", "html"]).exit_code == 2
