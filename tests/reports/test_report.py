from __future__ import annotations

import copy
import dataclasses
import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from profiling.compare import Comparison, compare_profiles
from profiling.energy import COST_PRESETS
from profiling.study import RunInfo
from reports import tables
from reports.html import render_page, write_page
from reports.page import build_page, headline_cards
from reports.study import Study, study_from_comparison
from tests.reports.browser import visit
from tests.reports.conftest import tiny_profiles

EVIL = "<script>alert(1)</script>"
ARTIFACTS = Path(__file__).resolve().parents[2] / "out" / "test-artifacts"


def _embedded(text: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="sdit-data">(.*?)</script>', text, re.S).group(1))


def test_role_of_lines_up_sdit_and_dit() -> None:
    cases = {("patch_embed", "Conv2d"): "embedding", ("time_embed.mlp.0", "Linear"): "embedding",
             ("in_blocks.0.time_mixing.key", "Linear"): "time mixing / attention",
             ("blocks.1.attn.qkv", "Linear"): "time mixing / attention",
             ("mid_blocks.0.channel_mixing.value", "Linear"): "channel mixing / MLP",
             ("blocks.0.mlp.2", "Linear"): "channel mixing / MLP",
             ("out_blocks.0.ffn_lif", "LIFNode"): "neurons (LIF)",
             ("in_blocks.0.recon_d", "Linear"): "reconstruction",
             ("out_blocks.0.skip_linear", "Linear"): "residuals, skips, modulation",
             ("blocks.0.adaln.1", "Linear"): "residuals, skips, modulation",
             ("final_conv", "Conv2d"): "head", ("final.linear", "Linear"): "head",
             ("(outside model)", "outside model"): "outside the model"}
    assert {k: tables.role_of(*k) for k in cases} == cases


def test_tables_carry_the_study_numbers(tiny_study: Study) -> None:
    comp = tables.comparison_table(tiny_study).set_index("model")
    sdit, dit = (m.profile for m in tiny_study.models)
    assert comp.loc["sdit-tiny", "macs_per_image_strict"] == sdit.per_image["macs"]
    assert comp.loc["dit-tiny", "macs_per_image_strict"] == 2 * 499_712  # 2 DDIM steps of one forward each
    assert comp.loc["paper Table III: SDiT", "params_trainable"] == 11.67e6
    assert comp.loc["paper Table III: DiT", "macs_per_image_strict"] == 3.48e9
    for conv in ("strict", "paper"):
        col = f"energy_uJ_per_image_{conv}_45nm-fp32"
        assert comp.loc["sdit-tiny", col] == tiny_study.energy_j("sdit-tiny", "45nm-fp32", conv) * 1e6
        assert comp.loc["ratio sdit-tiny / dit-tiny", col] == pytest.approx(
            comp.loc["sdit-tiny", col] / comp.loc["dit-tiny", col], rel=1e-15)
    roles = tables.roles_table(tiny_study)
    layers = tables.layers_table(tiny_study)
    col = "energy_uJ_paper_45nm-fp32"
    for model in ("sdit-tiny", "dit-tiny"):  # role sums are the layer sums, and the layer sums the total
        assert roles[roles.model == model][col].sum() == pytest.approx(layers[layers.model == model][col].sum())
        assert layers[layers.model == model][col].sum() == pytest.approx(
            tiny_study.energy_j(model, "45nm-fp32", "paper") * 1e6, rel=1e-12)
    spk = tables.spiking_steps_table(tiny_study)
    assert set(spk["spiking_step"]) == {0, 1, 2, 3}
    assert spk["dead"].all()  # untrained: no LIF layer fires at any step
    presets = tables.presets_table(tiny_study).set_index("preset")
    assert presets.loc["45nm-fp32", "mac_term"] == "4.6 pJ per MAC"
    assert presets.loc["45nm-fp32", "neuron_term"] == "not defined by 45nm-fp32"
    assert presets.loc["truenorth", "scope"] == "all-in"
    assert presets.loc["loihi", "evidence"] == "pre-silicon simulation"
    energy = tables.energy_table(tiny_study).set_index(["model", "preset", "convention"])
    assert pd.isna(energy.loc[("dit-tiny", "loihi", "strict"), "energy_uJ_per_image"])  # Loihi has no MAC energy
    assert energy.loc[("dit-tiny", "loihi", "strict"), "undefined"].startswith("not defined by loihi")


def test_page_numbers_read_back_equal_the_comparison(tiny_comparison: Comparison, tiny_study: Study,
                                                    run_info: RunInfo) -> None:
    text = render_page(build_page(tiny_study, run_info))
    data = _embedded(text)
    assert Comparison.from_dict(data["comparison"]).to_dict() == tiny_comparison.to_dict()
    comp = pd.read_csv(io.StringIO(data["files"]["tables/comparison.csv"])).set_index("model")
    for t in tiny_comparison.targets:
        assert comp.loc[t.name, "params_trainable"] == t.params["trainable"]
        assert comp.loc[t.name, "params_total"] == t.params["total"]
        assert comp.loc[t.name, "macs_per_image_strict"] == t.profile.per_image["macs"]
        for conv in tiny_comparison.conventions:
            assert comp.loc[t.name, f"energy_uJ_per_image_{conv}_45nm-fp32"] == pytest.approx(
                t.estimate("45nm-fp32", conv).total_j * 1e6, rel=1e-15)
    layers = pd.read_csv(io.StringIO(data["files"]["tables/layers.csv"]))
    sdit = tiny_comparison.target("sdit-tiny").estimate("45nm-fp32", "paper")
    sel = layers[layers.model == "sdit-tiny"].set_index("layer")["energy_uJ_paper_45nm-fp32"]
    assert {k: v for k, v in sel.items()} == pytest.approx({k: e["total_j"] * 1e6 for k, e in sdit.layers.items()})
    energy = pd.read_csv(io.StringIO(data["files"]["tables/preset_energy.csv"]))
    for row in energy.itertuples():
        want = tiny_study.energy_j(row.model, row.preset, row.convention)
        if want is None:
            assert pd.isna(row.energy_uJ_per_image) and row.undefined.startswith(f"not defined by {row.preset}")
        else:
            assert row.energy_uJ_per_image == pytest.approx(want * 1e6, rel=1e-15)
    be = pd.read_csv(io.StringIO(data["files"]["tables/break_even.csv"]))
    expected = {(b.costs, b.convention): b.firing_rate for b in tiny_comparison.break_even}
    assert len(be) == len(expected) == len(tiny_comparison.costs) * len(tiny_comparison.conventions)
    for row in be.itertuples():
        want = expected[(row.preset, row.convention)]
        if want is None:
            assert pd.isna(row.break_even_firing_rate_pct)
        else:
            assert row.break_even_firing_rate_pct == pytest.approx(100 * want, rel=1e-12)


def test_page_is_deterministic_apart_from_the_date(tiny_study: Study, run_info: RunInfo) -> None:
    a = render_page(build_page(tiny_study, run_info))
    b = render_page(build_page(tiny_study, dataclasses.replace(run_info, created="2027-01-01 12:00:00 UTC")))
    assert a != b and a.replace("2026-12-01 00:00:00 UTC", "2027-01-01 12:00:00 UTC") == b


def _evil_study() -> Study:
    """The tiny study with a model label and a layer name that are a script tag."""
    profiles = tiny_profiles()
    sdit = profiles[0]
    layers = [dataclasses.replace(r, name=EVIL) if r.name == "in_blocks.0.time_mixing.key" else r
              for r in sdit.layers]
    layer_steps = [dataclasses.replace(r, layer=EVIL) if r.layer == "in_blocks.0.time_mixing.key" else r
                   for r in sdit.layer_steps]
    profiles[0] = dataclasses.replace(sdit, layers=layers, layer_steps=layer_steps, model=EVIL)
    comparison = compare_profiles(profiles, list(COST_PRESETS.values()), ("paper", "strict", "block", "spikformer"))
    return study_from_comparison(comparison, {EVIL: EVIL})


def test_script_in_labels_is_text_and_never_runs(tmp_path: Path, run_info: RunInfo) -> None:
    study = _evil_study()
    path = write_page(build_page(study, run_info), tmp_path / "report.html")
    text = path.read_text()
    assert EVIL not in text
    seen = visit(path, tmp_path / "evil.png", {
        "cell": "Array.from(document.querySelectorAll('[data-table=comparison] thead th'))"
                ".map(td => td.textContent)",
        "layer_tick": f"document.getElementById('fig-layers').textContent.includes({json.dumps(EVIL)})",
        "scripts": "document.querySelectorAll('main script:not([type])').length",
    })
    assert seen.dialogs == [] and seen.page_errors == [] and seen.console_errors == []
    assert EVIL in seen.results["cell"]
    assert seen.results["layer_tick"] is True
    assert seen.results["scripts"] == 0


def _expected_traces(study: Study) -> dict[str, int]:
    """Traces each figure must draw, from the comparison's shape alone."""
    n = len(study.models)
    spiking = [m for m in study.models if m.spiking]
    ann = [m for m in study.models if not m.spiking]
    convs = list(study.conventions)
    sweep_lines = {(r["model"], r["convention"]) for r in study.sweep_rows if r["preset"] == study.headline_preset}
    swept = {m for m, _ in sweep_lines}, {c for _, c in sweep_lines}
    # line figures: every (model, convention) line, then a legend key of one entry per model and per convention
    out = {"fig-roles": n, "fig-layers": n, "fig-steps": n * len(convs) + n + len(convs),
           "fig-sweep": len(sweep_lines) + len(ann) + 1 + len(swept[0]) + len(swept[1]),
           "fig-sensitivity": len(spiking) * len(ann), "fig-presets": n}
    # per-layer MAC/AC counts exist for the record columns strict and paper: one figure each
    out.update({f"fig-ops-{i}": 2 * n for i in range(len([c for c in convs if c in ("strict", "paper")]))})
    out.update({f"fig-fr-T-{i}": 2 for i in range(len(spiking))})  # heatmap + dead/saturated marks
    stepped = {r["model"] for r in study.layer_step_rows}
    out.update({f"fig-fr-step-{i}": 2 for i, m in enumerate(spiking) if m.label in stepped})
    return out


def test_report_in_browser(tiny_study: Study, run_info: RunInfo, tmp_path: Path) -> None:
    path = write_page(build_page(tiny_study, run_info), tmp_path / "report.html")
    shot = ARTIFACTS / "report-tiny.png"
    seen = visit(path, shot, {
        "traces": "Object.fromEntries(Array.from(document.querySelectorAll('.plot'))"
                  ".map(d => [d.id, d.data.length]))",
        "rendered": "document.querySelectorAll('.plot[data-rendered=true] .main-svg').length > 0",
        "models": "Array.from(document.querySelectorAll('[data-table=comparison] thead th'))"
                  ".map(td => td.textContent)",
    })
    assert seen.blocked_requests == []
    assert seen.console_errors == [] and seen.page_errors == []
    assert seen.results["traces"] == _expected_traces(tiny_study)
    assert seen.results["rendered"] is True
    assert {m.label for m in tiny_study.models} <= set(seen.results["models"])
    assert shot.is_file() and shot.stat().st_size > 50_000


def _chart(page, element_id: str):
    from reports.html import Chart

    return next(b for s in page.sections for b in s.blocks if isinstance(b, Chart) and b.element_id == element_id)


def test_measured_comparison_shows_the_power_trace_with_window_marks(measured_comparison: Comparison,
                                                                     measured_study: Study, run_info: RunInfo,
                                                                     tmp_path: Path) -> None:
    page = build_page(measured_study, run_info)
    chart = _chart(page, "fig-power")
    fig = chart.figure
    # per measured model: its power line and its idle baseline; the marks are shapes, not traces
    assert [t.name for t in fig.data] == ["sdit-tiny: power (counter, 2 samples)", "sdit-tiny: idle baseline 50.0 W",
                                          "dit-tiny: power (counter, 2 samples)", "dit-tiny: idle baseline 50.0 W"]
    for target in measured_comparison.targets:
        meas = target.measured["measurement"]
        window = meas["window_end_s"] - meas["window_start_s"]
        assert window == meas["time_s"] == target.measured["window_s"]
        sel = chart.data[chart.data.model == target.name]
        assert list(sel["time_s"]) == [t - meas["window_start_s"] for t, _ in meas["samples"]]
        assert list(sel["power_W"]) == [w for _, w in meas["samples"]]
    # 0.125 s a forward, 2 DDIM steps: 4 runs fill sdit's 1 s window; dit's 0.5 s runs take 2
    assert [s.x0 for s in fig.layout.shapes] == [0.0, 1.0]  # both windows close at 1 s: one mark names both
    assert [a.text for a in fig.layout.annotations] == ["window opens",
                                                        "sdit-tiny, dit-tiny: window closes (1.00 s)"]
    assert "method: counter" in fig.layout.title.text and fig.layout.yaxis.title.text == "power (W, whole GPU, NVML)"
    assert "total-energy counter" in chart.caption
    measured = tables.measured_table(measured_study).set_index("model")
    assert measured.loc["sdit-tiny", "above_idle_uJ_per_image"] == pytest.approx((300.0 - 50.0) / 4 * 1e6)
    assert measured.loc["sdit-tiny", "power_trace_samples"] == 2
    text = render_page(page)
    assert "not measured" not in text.split('id="measured"')[1].split("</section>")[0]
    seen = visit(write_page(page, tmp_path / "report.html"), ARTIFACTS / "report-measured.png", {
        "traces": "document.getElementById('fig-power').data.length",
        "marks": "document.querySelectorAll('#fig-power .shapelayer path').length",
    })
    assert seen.blocked_requests == [] and seen.console_errors == [] and seen.page_errors == []
    assert seen.results == {"traces": 4, "marks": 2}


def test_a_rapl_measurement_is_labelled_cpu_packages_never_whole_gpu(measured_comparison: Comparison,
                                                                     run_info: RunInfo) -> None:
    data = copy.deepcopy(measured_comparison.to_dict())  # to_dict shares its records with the fixture
    for target in data["targets"]:
        target["measured"]["meter"] = "RAPL package energy counter (package-0): CPU packages only, no DRAM or GPU"
    study = study_from_comparison(Comparison.from_dict(data))
    page = build_page(study, run_info)
    chart = _chart(page, "fig-power")
    assert chart.figure.layout.yaxis.title.text == "power (W, CPU packages, RAPL)"
    assert "RAPL package counters" in chart.caption and "NVML" not in chart.caption
    assert set(tables.measured_table(study)["scope"]) == {"CPU packages, RAPL"}
    section = render_page(page).split('<section id="measured">')[1].split("</section>")[0]
    assert "CPU packages, RAPL" in section and "whole GPU" not in section and "whole-GPU" not in section
    card = next(c for c in headline_cards(study) if c.title == "measured energy per image")
    assert card.detail.startswith("CPU packages, RAPL, idle draw included")
    # the NVML study keeps its GPU scope
    assert set(tables.measured_table(study_from_comparison(measured_comparison))["scope"]) == {"whole GPU, NVML"}


def test_without_a_meter_the_one_line_reason_stays(tiny_study: Study, run_info: RunInfo) -> None:
    page = build_page(tiny_study, run_info)
    assert not any(getattr(b, "element_id", None) == "fig-power" for s in page.sections for b in s.blocks)
    section = render_page(page).split('<section id="measured">')[1].split("</section>")[0]
    for m in tiny_study.models:
        assert f"{m.label}: not measured: not requested (pass --measure)</p>" in section


def test_break_even_labels_name_the_models_and_keep_apart() -> None:
    from reports.figures import _name_positions

    # paper alone; block and spikformer 0.3 points apart on the same baseline (an overlap seen before)
    points = pd.DataFrame({"model": ["s"] * 4, "baseline": ["b"] * 4, "convention": ["paper", "strict", "block", "x"],
                           "break_even_firing_rate_pct": [10.2, 58.8, 59.1, 80.0],
                           "baseline_uJ_per_image": [2881.7] * 4})
    assert _name_positions(points, "paper") == ["top right", "top center", "top center", "top center"]
    points["convention"] = "paper"  # every point labelled: close ones alternate above and below
    assert _name_positions(points, "paper") == ["top right", "top left", "bottom left", "top left"]


@pytest.mark.parametrize(("models", "rows"), [
    (["checkpoints/sdit-small-fmnist", "checkpoints/dit-small-fmnist"], 1),  # one row in the default report
    (["checkpoints/sdit-small-sd-fmnist", "checkpoints/sdit-small-fmnist", "checkpoints/dit-small-fmnist"], 2)])
def test_ops_legend_rows_fit_under_the_title(models: list[str], rows: int) -> None:
    """Three shipped models give six MAC/AC legend entries in two rows (as the browser draws them at the report's
    width): the top margin grows by a row instead of the second row covering the chart's title."""
    from reports.figures import ops_bars

    layers = pd.DataFrame([{"model": m, "role": "head", "layer": "final_linear", "order": 0,
                            "macs_strict": 10, "acs_strict": 5} for m in models])
    fig = ops_bars(layers, "strict", models)
    assert len(fig.data) == 2 * len(models)
    assert fig.layout.margin.t == 68 + 22 * rows
    assert fig.layout.legend.yanchor == "bottom" and fig.layout.legend.y > 1
