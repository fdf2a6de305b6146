from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from profiling.compare import Comparison
from reports import tables
from reports.html import render_page, write_page
from reports.page import RunInfo, build_page
from reports.study import Study, study_from_profiles
from tests.reports.browser import visit
from tests.reports.conftest import tiny_models

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
    models = tiny_models()
    sdit = models[0]
    layers = [dataclasses.replace(r, name=EVIL) if r.name == "in_blocks.0.time_mixing.key" else r
              for r in sdit.profile.layers]
    layer_steps = [dataclasses.replace(r, layer=EVIL) if r.layer == "in_blocks.0.time_mixing.key" else r
                   for r in sdit.profile.layer_steps]
    profile = dataclasses.replace(sdit.profile, layers=layers, layer_steps=layer_steps, model=EVIL)
    models[0] = dataclasses.replace(sdit, label=EVIL, profile=profile, description=EVIL)
    return study_from_profiles(models)


def test_script_in_labels_is_text_and_never_runs(tmp_path: Path, run_info: RunInfo) -> None:
    study = _evil_study()
    path = write_page(build_page(study, run_info), tmp_path / "report.html")
    text = path.read_text()
    assert EVIL not in text
    seen = visit(path, tmp_path / "evil.png", {
        "cell": "Array.from(document.querySelectorAll('[data-table=comparison] tbody td:first-child'))"
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
    out = {"fig-roles": n, "fig-layers": n, "fig-steps": n * len(convs), "fig-sweep": len(sweep_lines) + len(ann) + 1,
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
        "models": "Array.from(document.querySelectorAll('[data-table=comparison] tbody td:first-child'))"
                  ".map(td => td.textContent)",
    })
    assert seen.blocked_requests == []
    assert seen.console_errors == [] and seen.page_errors == []
    assert seen.results["traces"] == _expected_traces(tiny_study)
    assert seen.results["rendered"] is True
    assert {m.label for m in tiny_study.models} <= set(seen.results["models"])
    assert shot.is_file() and shot.stat().st_size > 50_000
