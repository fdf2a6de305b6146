"""Torch-free records: the typed workload, per-layer-per-step counts that sum to the totals."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from profiling.conventions import split_steps
from profiling.records import COLUMNS, OLDER_PROFILE_READER, LayerStepRecord, Profile
from profiling.workloads import profile_sampling
from sdit.models import build_model
from sdit.workload import Workload

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def firing_run() -> Profile:
    torch.manual_seed(0)
    model = build_model("sdit-tiny")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(8.0)
    return profile_sampling(model, name="sdit-tiny", sample_steps=3, batch_size=3, eta=1.0, seed=2)


def test_per_step_layer_records_sum_to_the_totals_exactly(firing_run: Profile) -> None:
    assert firing_run.workload == Workload.ddim(3, eta=1.0, batch_size=3, seed=2)
    assert [s.index for s in firing_run.steps] == [0, 1, 2]
    assert len(firing_run.layer_steps) == 3 * len(firing_run.layers)
    paper = split_steps(firing_run, "paper")
    assert firing_run.per_image["spikes"] > 0 and sum(sum(s.acs for s in step.values()) for step in paper) > 0
    for layer in firing_run.layers:
        rows = [r for r in firing_run.layer_steps if r.layer == layer.name]
        assert [r.step for r in rows] == [0, 1, 2]
        for column in COLUMNS:
            values = [getattr(r, column) for r in rows]
            total = sum(values) if all(isinstance(v, int) for v in values) else math.fsum(values)
            assert total == getattr(layer, column), (layer.name, column)
        if layer.spikes_per_step:
            assert [sum(v) for v in zip(*(r.spikes_per_step for r in rows), strict=True)] == layer.spikes_per_step
    for step in firing_run.steps:
        rows = firing_run.steps_of(step.index)
        assert step.totals["macs"] == sum(r.macs for r in rows)
        assert step.totals["dense_macs"] == sum(r.dense_macs for r in rows)
    for column in ("macs", "acs", "spikes", "neuron_updates", "dense_macs", "bytes"):
        assert sum(s.totals[column] for s in firing_run.steps) == firing_run.per_image[column]


def test_per_step_firing_rates_and_frames(firing_run: Profile) -> None:
    lif = firing_run.layer("in_blocks.0.attn_lif")
    rows = [r for r in firing_run.layer_steps if r.layer == lif.name]
    assert [r.firing_rate for r in rows] == pytest.approx([r.spikes / r.neuron_updates for r in rows], rel=1e-12)
    assert len({r.firing_rate for r in rows}) == 3  # it changes from step to step
    assert lif.block == "in_blocks.0" and firing_run.layer("patch_embed").block is None
    long = firing_run.layer_steps_frame()
    assert len(long) == len(firing_run.layer_steps)
    assert long.groupby("layer")["macs"].sum()[lif.name] == lif.macs
    steps = firing_run.steps_frame()
    assert list(steps.index) == [0, 1, 2] and int(steps["macs"].sum()) == firing_run.per_image["macs"]
    assert firing_run.layers_frame().loc[lif.name, "spikes"] == lif.spikes


def test_profile_round_trips_with_layer_steps(firing_run: Profile) -> None:
    assert Profile.from_json(firing_run.to_json()) == firing_run


def test_an_older_profile_is_one_line_naming_what_reads_it(firing_run: Profile) -> None:
    data = firing_run.to_dict()
    assert data["schema"] == "sdit.profile/4" and "macs_paper" not in data["layers"][0]
    for schema, reader in ((None, OLDER_PROFILE_READER), ("sdit.profile/1", OLDER_PROFILE_READER),
                           ("sdit.profile/2", "sdit 0.2.0"), ("sdit.profile/3", "without input firing-rate columns")):
        old = {k: v for k, v in data.items() if k != "schema"} | ({} if schema is None else {"schema": schema})
        with pytest.raises(ValueError, match=f"a profile of schema {schema!r}, not 'sdit.profile/4'") as err:
            Profile.from_dict(old)
        assert reader in str(err.value) and "\n" not in str(err.value)


def test_reading_a_profile_imports_no_torch(tmp_path: Path, firing_run: Profile) -> None:
    path = tmp_path / "p.json"
    path.write_text(firing_run.to_json())
    code = (
        "import sys; from pathlib import Path; from profiling.records import Profile; "
        f"p = Profile.from_json(Path({str(path)!r}).read_text()); assert p.layer_steps; "
        "import profiling.profile; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'spikingjelly', 'sdit') "
        "and m not in ('sdit', 'sdit.workload')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={"PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_records_import_no_other_module_of_the_package() -> None:
    import ast

    tree = ast.parse((ROOT / "profiling" / "records.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    # pandas on use; sdit.workload is torch-free, on the floor below
    assert imported == {"__future__", "json", "math", "dataclasses", "typing", "pandas", "sdit.workload"}


def test_a_layer_step_record_of_a_full_dict_is_the_constructed_one() -> None:
    values = {c: i for i, c in enumerate(COLUMNS)}
    values.update(step=2, t=760, layer="blocks.0", firing_rate=0.25, spikes_per_step=[1, 2], upstream={"(none)": 3})
    built = LayerStepRecord(**values)
    fast = LayerStepRecord.of(dict(values))
    assert fast == built and fast.bytes == built.bytes == COLUMNS.index("bytes")
    with pytest.raises(TypeError, match="missing \\['upstream'\\], unknown \\['upstreams'\\]"):
        LayerStepRecord.of({**{k: v for k, v in values.items() if k != "upstream"}, "upstreams": {}})
    with pytest.raises(AttributeError):
        fast.macs = 1  # still frozen


def test_build_profiles_fast_record_is_the_constructed_one() -> None:
    from dataclasses import fields

    from profiling.profile import _STEP_KEYS, _layer_step

    assert sorted(_STEP_KEYS) == sorted(f.name for f in fields(LayerStepRecord))  # every field, once
    values = tuple(range(len(COLUMNS))) + (2, 760, "blocks.0", 0.25, [1, 2], {"(none)": 3})
    fast = _layer_step(values)
    assert fast == LayerStepRecord(**dict(zip(_STEP_KEYS, values, strict=True)))
    assert (fast.step, fast.layer, fast.upstream, fast.bytes) == (2, "blocks.0", {"(none)": 3}, COLUMNS.index("bytes"))


def test_frames_have_one_unit_per_column_nullable_dtypes_and_no_lists(firing_run: Profile) -> None:
    layers, steps, long = firing_run.layers_frame(), firing_run.steps_frame(), firing_run.layer_steps_frame()
    for frame in (layers, steps, long, firing_run.spikes_per_step_frame()):
        assert "object" not in set(frame.dtypes.astype(str)), frame.dtypes  # no None in object columns
        assert "spikes_per_step" not in frame.columns
    assert layers.index.name == "layer" and list(long.index.names) == ["step", "layer"]
    assert str(layers["firing_rate"].dtype) == "Float64" and layers["firing_rate"].isna().sum() > 0  # <NA>, not None
    lif = firing_run.layer("in_blocks.0.attn_lif")
    assert layers.loc[lif.name, "firing_rate"] == pytest.approx(lif.spikes / lif.neuron_updates)  # a fraction
    per_t = firing_run.spikes_per_step_frame()
    assert per_t.loc[lif.name]["spikes"].tolist() == lif.spikes_per_step  # long format, T rows a layer
    assert per_t.groupby("layer")["spikes"].sum()[lif.name] == pytest.approx(lif.spikes, rel=1e-12)
    assert long.loc[(1, lif.name), "firing_rate"] == pytest.approx(firing_run.steps_of(1)[
        [r.layer for r in firing_run.steps_of(1)].index(lif.name)].firing_rate)


def test_repr_is_a_few_lines_with_the_totals(firing_run: Profile) -> None:
    text = repr(firing_run)
    assert len(text.splitlines()) <= 5 and len(text) < 500
    assert "sdit-tiny" in text and "DDIM 3 steps, eta 1, batch 3, seed 2" in text
    assert f"macs {firing_run.per_image['macs']:,.0f}" in text and f"{firing_run.mean_firing_rate:.4f}" in text


def test_estimate_and_comparison_frames_are_in_microjoules(firing_run: Profile) -> None:
    from profiling.compare import compare_profiles
    from profiling.energy import estimate, load_costs
    from profiling.workloads import profile_sampling as run

    est = estimate(firing_run, load_costs("45nm-fp32"), "paper")
    frame = est.frame()
    assert frame.index.name == "layer" and set(frame.dtypes.astype(str)) == {"Float64"}
    assert frame["total_uj"].sum() == pytest.approx(est.total_j * 1e6, rel=1e-9)
    assert frame["acs"].sum() == pytest.approx(est.counts["acs"], rel=1e-9) and frame.attrs["convention"] == "paper"
    assert frame["neuron_uj"].isna().all()  # 45nm-fp32 defines no neuron term: <NA>, not 0
    dit = run(build_model("dit-tiny"), name="dit-tiny", sample_steps=3, batch_size=3, eta=1.0, seed=2)
    comparison = compare_profiles([firing_run, dit], [load_costs("45nm-fp32")], ("strict", "paper"))
    table = comparison.frame()
    assert list(table.index.names) == ["model", "costs", "convention"] and len(table) == 4
    row = table.loc[("sdit-tiny", "45nm-fp32", "paper")]
    assert row["total_uj"] == pytest.approx(est.total_j * 1e6) and row["firing_rate"] == pytest.approx(
        firing_run.mean_firing_rate)
    assert row["ratio"] == pytest.approx(est.total_j / dit.per_image["macs"] / 4.6e-12)
    assert pd_isna(table.loc[("dit-tiny", "45nm-fp32", "strict"), "firing_rate"])
    breaks = comparison.break_even_frame()
    assert len(breaks) == 2 and str(breaks["break_even_firing_rate"].dtype) == "Float64"


def pd_isna(value: object) -> bool:
    import pandas as pd

    return bool(pd.isna(value))
