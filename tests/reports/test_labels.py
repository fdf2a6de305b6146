"""Short model labels: made from presets, checkpoints' steps and directories, or given with --label; used by the
report, while the target as given stays in the provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import app
from profiling.compare import Comparison
from profiling.study import RunInfo, StudyInputError, short_labels
from reports.html import render_page
from reports.page import build_page, headline_cards
from reports.study import study_from_comparison
from sdit.targets import Target


def _ckpt(path: str, description: str) -> Target:
    return Target(label=path, source="checkpoint", model=None, description=description)  # type: ignore[arg-type]


def _preset(name: str) -> Target:
    return Target(label=name, source="preset", model=None, description=f"preset {name} (untrained)")  # type: ignore[arg-type]


def test_a_checkpoint_is_named_by_its_preset_and_step_a_preset_by_its_name() -> None:
    targets = [_ckpt("checkpoints/sdit-small-fmnist", "sdit-small at step 21500 (EMA weights)"),
               _ckpt("checkpoints/dit-small-fmnist/model.safetensors", "dit-small at step 24000 (EMA weights)"),
               _preset("sdit-tiny")]
    assert short_labels(targets) == {"checkpoints/sdit-small-fmnist": "sdit-small@21500",
                                     "checkpoints/dit-small-fmnist/model.safetensors": "dit-small@24000",
                                     "sdit-tiny": "sdit-tiny"}


def test_labels_stay_unique_among_the_compared_models() -> None:
    same = "sdit-small at step 21500 (EMA weights)"
    targets = [_ckpt("checkpoints/sdit-small-fmnist", same), _ckpt("runs/a/ckpt-21500.safetensors", same),
               _ckpt("runs/b/ckpt-21500.safetensors", same),
               _ckpt("checkpoints/dit-small-fmnist", "dit-small at step 24000 (EMA weights)")]
    labels = short_labels(targets)
    # same preset and step: the directory (or file stem) decides; where that too is shared, the place in order
    assert list(labels.values()) == ["sdit-small-fmnist@21500", "ckpt-21500@21500#2", "ckpt-21500@21500#3",
                                     "dit-small@24000"]
    assert len(set(labels.values())) == len(targets)


def test_shipped_fine_tunes_of_one_preset_are_named_by_their_directories(tmp_path: Path) -> None:
    base, tuned, run = tmp_path / "sdit-small-sd-fmnist", tmp_path / "sdit-small-sd-rate0.1-fmnist", tmp_path / "run"
    for shipped in (base, tuned):
        shipped.mkdir()
        (shipped / "provenance.json").write_text("{}")
    targets = [_ckpt(str(base), "sdit-small-sd at step 21500 (EMA weights)"),
               _ckpt(str(tuned), "sdit-small-sd at step 3000 (EMA weights)"),
               _ckpt(str(run / "ckpt-1000.safetensors"), "sdit-small-sd at step 1000 (EMA weights)")]
    # the shipped ones by their directories; a run's checkpoint keeps its preset and step
    assert list(short_labels(targets).values()) == ["sdit-small-sd-fmnist@21500", "sdit-small-sd-rate0.1-fmnist@3000",
                                                    "sdit-small-sd@1000"]


@pytest.mark.parametrize(("given", "message"), [
    (["a"], "--label: 1 label(s) for 2 targets; give one per target, in the order of the targets"),
    (["a", "a"], "--label: 'a' is given twice; each model needs its own label"),
    (["a", " "], "--label: a label may not be empty"),
    (["a", "x" * 41], "--label: a label has at most 40 characters ('xxxxxxxxxxxxxxxxxxxx'... has 41)")])
def test_given_labels_are_one_unique_usable_name_per_target(given: list[str], message: str) -> None:
    targets = [_preset("sdit-tiny"), _preset("dit-tiny")]
    with pytest.raises(StudyInputError) as err:
        short_labels(targets, given)
    assert str(err.value) == message
    assert short_labels(targets, ["spiking", "dense"]) == {"sdit-tiny": "spiking", "dit-tiny": "dense"}


def test_the_report_uses_the_labels_and_keeps_the_target_in_the_provenance(tiny_comparison: Comparison,
                                                                           run_info: RunInfo) -> None:
    study = study_from_comparison(tiny_comparison, labels={"sdit-tiny": "S", "dit-tiny": "D"})
    assert [(m.label, m.target) for m in study.models] == [("S", "sdit-tiny"), ("D", "dit-tiny")]
    assert {r["model"] for r in study.energy_rows} == {"S", "D"}
    assert {(r["model"], r["baseline"]) for r in study.break_even_rows} == {("S", "D")}
    text = render_page(build_page(study, run_info))
    assert "<dt>S</dt><dd>sdit-tiny: preset</dd>" in text  # the target as given, in the provenance
    with pytest.raises(ValueError, match="each model needs its own label"):
        study_from_comparison(tiny_comparison, labels={"sdit-tiny": "X", "dit-tiny": "X"})


def test_untrained_weights_are_said_where_the_figures_are(tiny_study, run_info: RunInfo) -> None:
    assert all(m.untrained for m in tiny_study.models)  # presets
    verdict = next(c for c in headline_cards(tiny_study) if c.title.startswith("verdict"))
    assert "(untrained weights)" in verdict.value and verdict.detail.count("(untrained weights)") == 2
    page = build_page(tiny_study, run_info)
    assert page.title == "SDiT energy report: sdit-tiny (untrained weights) vs dit-tiny (untrained weights)"
    charts = {b.element_id: b for s in page.sections for b in _all(s.blocks) if hasattr(b, "figure")}
    for key in ("fig-sensitivity", "fig-roles", "fig-layers", "fig-steps", "fig-sweep", "fig-presets"):
        assert "untrained weights: sdit-tiny, dit-tiny" in charts[key].figure.layout.title.text, key
    assert "sdit-tiny (untrained weights): firing rate" in charts["fig-fr-T-0"].figure.layout.title.text


def _all(blocks):
    for b in blocks:
        yield b
        inner = getattr(b, "blocks", None)
        if inner is not None:
            yield from _all([c for x in inner for c in (x if isinstance(x, list) else [x])])


def test_compare_label_option(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["compare", "sdit-tiny", "dit-tiny", "--sample-steps", "2", "--samples", "0", "--costs", "45nm-fp32"]
    bad = runner.invoke(app, [*args, "--label", "only-one", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2
    assert bad.stderr.strip().splitlines()[-1] == ("error: --label: 1 label(s) for 2 targets; give one per "
                                                   "target, in the order of the targets")
    assert not (tmp_path / "bad").exists()
    out = tmp_path / "cmp"
    result = runner.invoke(app, [*args, "--label", "spiking", "--label", "dense", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert list(pd.read_csv(out / "tables" / "comparison.csv")["model"][:3]) == ["spiking", "dense",
                                                                                 "ratio spiking / dense"]
    data = json.loads((out / "comparison.json").read_text())
    assert [t["name"] for t in data["targets"]] == ["sdit-tiny", "dit-tiny"]  # the data keeps the targets
    assert "spiking (model, untrained weights) vs dense (baseline)" in result.stdout
