"""The frontier in the report: the figure's points, step line and error bars, the section and its CSV, the one line
that replaces the figure when fewer than two models have a FID of one protocol, the terminal table, and
``sdit report`` of a saved study giving the same frontier back."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import app
from profiling.compare import Comparison, compare_profiles, with_frontier
from profiling.energy import load_costs
from profiling.study import RunInfo
from reports import terminal
from reports.figures import frontier_plot
from reports.html import Chart, Text, frame_csv, render_page, tables_of
from reports.page import build_page
from reports.study import study_from_comparison
from reports.tables import FRONTIER_COLUMNS, frontier_table
from tests.profiling.firing import firing_sdit_tiny
from tests.profiling.test_frontier import record, tiny_profiles

RUN = RunInfo(command="sdit compare ...", created="2026-12-07 00:00:00 UTC", versions={}, device="cpu",
              git_revision="test", seed=1)


@pytest.fixture(scope="module")
def comparison() -> Comparison:
    """sdit-tiny, dit-tiny and a sdit-tiny that fires more (dearer), one forward each, two conventions."""
    profiles = tiny_profiles()
    firing = firing_sdit_tiny(1)
    profiles.append(type(firing).from_dict({**firing.to_dict(), "model": "sdit-firing"}))
    return compare_profiles(profiles, [load_costs("45nm-fp32")], ["paper", "strict"])


FIDS = {"sdit-tiny": 180.0, "dit-tiny": 120.0, "sdit-firing": 90.0}


def _with(comparison: Comparison, fids: dict[str, float], **kw) -> Comparison:
    return with_frontier(comparison, {m: [record(f, **kw)] for m, f in fids.items()})


def _section(page, name):
    return next(s for s in page.sections if s.element_id == name)


def test_the_figure_draws_each_point_the_front_and_the_range(comparison: Comparison) -> None:
    study = study_from_comparison(_with(comparison, FIDS))
    frame = frontier_table(study)
    energy = dict(zip(frame.model, frame.energy_uJ_per_image, strict=True))
    assert energy["dit-tiny"] < energy["sdit-tiny"] < energy["sdit-firing"]  # the case this test is about
    assert list(frame.on_front) == ["no", "yes", "yes"]
    assert frame.status[0] == "dominated by dit-tiny"
    fig = frontier_plot(frame, "45nm-fp32", "paper", "none", "N = 5,000, ddim, 50 steps, eta 1")
    line, front, dominated = fig.data
    assert line.line.shape == "hv" and list(line.y) == [120.0, 90.0]
    assert list(line.x) == [energy["dit-tiny"], energy["sdit-firing"]]
    assert list(front.text) == ["dit-tiny", "sdit-firing"] and list(dominated.text) == ["sdit-tiny"]
    row = frame.set_index("model").loc["sdit-tiny"]
    assert list(dominated.error_x.array) == [row.energy_max_uJ_per_image - row.energy_uJ_per_image]
    assert list(dominated.error_x.arrayminus) == [row.energy_uJ_per_image - row.energy_min_uJ_per_image]
    assert row.energy_max_uJ_per_image > 10 * row.energy_uJ_per_image  # the strict convention with dataflow memory
    assert fig.layout.xaxis.type == "log" and "paper, memory none" in fig.layout.xaxis.title.text
    assert "lower is better" in fig.layout.yaxis.title.text and "N = 5,000" in fig.layout.title.text


def test_the_section_follows_the_verdict_with_its_figure_and_csv(comparison: Comparison) -> None:
    page = build_page(study_from_comparison(_with(comparison, FIDS)), RUN)
    assert [s.element_id for s in page.sections][:2] == ["summary", "frontier"]
    blocks = _section(page, "frontier").blocks
    assert [type(b).__name__ for b in blocks] == ["Chart", "Text", "Table"] and blocks[2].folded()
    assert "the FIDs of samples drawn with ddim, 50 steps, eta 1: not one sampler" in blocks[1].text  # a forward
    assert "memory model none" in blocks[0].caption and "N = 5,000" in blocks[0].caption
    csv = tables_of(page)["frontier"]
    assert list(csv.columns) == FRONTIER_COLUMNS
    assert csv.set_index("model").loc["dit-tiny", ["domain_fid", "domain_kid", "on_front", "num_samples"]].tolist() \
        == [120.0, 0.5, "yes", 5000]
    html = render_page(page)
    assert 'id="fig-frontier" data-traces="3"' in html and 'data-table="frontier"' in html


@pytest.mark.parametrize(("fids", "kw", "words"), [
    ({}, {}, "No frontier plot: no model has a domain FID"),
    ({"dit-tiny": 120.0}, {}, "No frontier plot: only dit-tiny has a domain FID, and a front needs two models"),
])
def test_fewer_than_two_fids_say_why_in_one_line(comparison: Comparison, fids, kw, words) -> None:
    page = build_page(study_from_comparison(_with(comparison, fids, **kw)), RUN)
    blocks = _section(page, "frontier").blocks
    assert isinstance(blocks[0], Text) and blocks[0].text.startswith(words)
    assert not any(isinstance(b, Chart) for b in blocks) and "frontier" in tables_of(page)


def test_fids_of_two_protocols_are_not_drawn_on_one_front(comparison: Comparison) -> None:
    c = with_frontier(comparison, {"sdit-tiny": [record(180.0)], "dit-tiny": [record(120.0, n=1000)]})
    blocks = _section(build_page(study_from_comparison(c), RUN), "frontier").blocks
    assert blocks[0].text.startswith("No frontier plot: the 2 models with a domain FID were evaluated under 2 "
                                     "different protocols")
    c = with_frontier(comparison, {**{m: [record(f)] for m, f in FIDS.items() if m != "dit-tiny"},
                                   "dit-tiny": [record(120.0, steps=20)]})
    blocks = _section(build_page(study_from_comparison(c), RUN), "frontier").blocks
    assert isinstance(blocks[0], Chart) and len(blocks[0].figure.data[1].x) + len(blocks[0].figure.data[2].x) == 2
    assert blocks[1].text.startswith("The energies are of one forward")  # the study counted a forward
    assert blocks[2].text.startswith("Not on this plot: dit-tiny")


def test_the_terminal_table_fits_80_columns(comparison: Comparison) -> None:
    text = terminal.frontier_text(study_from_comparison(_with(comparison, FIDS)), 80)
    assert max(len(line) for line in text.splitlines()) <= 80
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.startswith(("sdit-", "dit-"))}
    assert rows["dit-tiny"][-2:] == ["120.0", "yes"] and rows["sdit-tiny"][-1] == "no"


def test_sdit_report_of_a_saved_study_gives_the_frontier_back(comparison: Comparison, tmp_path: Path) -> None:
    saved = _with(comparison, FIDS)
    (tmp_path / "comparison.json").write_text(json.dumps(saved.to_dict()))
    page = build_page(study_from_comparison(saved), RUN)
    result = CliRunner().invoke(app, ["report", str(tmp_path / "comparison.json"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "energy-quality frontier" in result.output and "verdict matrix" in result.output  # as compare prints
    again = json.loads((tmp_path / "r" / "comparison.json").read_text())
    assert again["frontier"] == saved.to_dict()["frontier"]
    assert (tmp_path / "r" / "tables" / "frontier.csv").read_text() == frame_csv(tables_of(page)["frontier"])
    assert pd.read_csv(tmp_path / "r" / "tables" / "frontier.csv")["on_front"].tolist() == ["no", "yes", "yes"]


def test_labels_of_near_points_go_apart() -> None:
    import plotly.graph_objects as go

    from reports.figures import _labels_apart

    front = go.Scatter(x=[785.0, 7204.0, 9961.0], y=[131.6, 124.9, 113.0], textposition=["top right"] * 3)
    dominated = go.Scatter(x=[2916.0, 2295.0, 5339.0], y=[187.0, 180.4, 266.8], textposition=["top right"] * 3)
    _labels_apart([front, dominated], close=0.08 * (266.8 - 113.0))
    # each point within 12.3 FID and a decade below another is labelled below itself; the rest keep the top
    assert list(front.textposition) == ["top right", "bottom right", "bottom right"]
    assert list(dominated.textposition) == ["top right", "bottom right", "top right"]
