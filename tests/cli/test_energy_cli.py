from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from profiling.memory import MEMORY_MODELS

runner = CliRunner()


def test_energy_measure_without_gpu_explains_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "e.json"
    result = runner.invoke(app, ["energy", "dit-tiny", "--method", "forward", "--measure", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["measured"] is None
    assert data["measured_reason"]
    assert data["estimated"]["compute_j"] == pytest.approx(499_712 * 4.6e-12)
    flat = " ".join(result.stdout.split())  # lines wrap at the terminal's width
    assert flat.count("measured energy unavailable:") == 1
    assert f"measured energy unavailable: {data['measured_reason']}" in flat


def test_energy_with_costs_preset_and_baseline(tmp_path: Path) -> None:
    out = tmp_path / "e.json"
    result = runner.invoke(app, ["energy", "sdit-tiny", "--costs", "45nm-int8", "--baseline", "dit-tiny",
                                 "--method", "forward", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["costs"]["name"] == "45nm-int8"
    assert data["estimated"]["mac_j"] == pytest.approx(5_860_528 * 0.23e-12)
    assert data["break_even"]["baseline_j"] == pytest.approx(499_712 * 0.23e-12)
    assert data["measured_reason"] == "not requested (pass --measure)"


def test_energy_bad_costs_is_one_line() -> None:
    result = runner.invoke(app, ["energy", "dit-tiny", "--costs", "45nm-fp64"])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: --costs '45nm-fp64' is neither a preset")


def test_energy_names_its_one_workload_and_every_convention(tmp_path: Path) -> None:
    out = tmp_path / "e.json"
    result = runner.invoke(app, ["energy", "sdit-tiny", "--baseline", "dit-tiny", "--sample-steps", "2", "--eta", "1",
                                 "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["workload"] == {"kind": "ddim", "timestep": None, "steps": 2, "eta": 1.0, "batch_size": 1, "seed": 0}
    assert data["workload_label"] == "DDIM 2 steps, eta 1, batch 1, seed 0"
    assert "DDIM 2 steps, eta 1, batch 1, seed 0" in result.stdout
    assert set(data["by_convention"]) == set(data["break_even"]["by_convention"]) == {
        "strict", "paper", "block", "spikformer"}
    assert data["break_even"]["baseline_j"] == pytest.approx(2 * 499_712 * 4.6e-12)
    comparison = data["comparison"]
    assert [t["name"] for t in comparison["targets"]] == ["sdit-tiny", "dit-tiny"]
    assert all(t["profile"]["workload"] == data["workload"] for t in comparison["targets"])


def test_energy_sample_steps_is_the_one_workload(tmp_path: Path) -> None:
    out = tmp_path / "e.json"
    result = runner.invoke(app, ["energy", "dit-tiny", "--sample-steps", "3", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["workload"]["steps"] == 3 and data["estimated"]["compute_j"] == pytest.approx(3 * 499_712 * 4.6e-12)
    old = runner.invoke(app, ["energy", "dit-tiny", "--measure-steps", "3"])
    assert old.exit_code == 2 and "No such option: --measure-steps" in old.stderr


def test_energy_all_in_preset_refuses_an_added_term() -> None:
    result = runner.invoke(app, ["energy", "dit-tiny", "--costs", "truenorth", "--e-neuron-pj", "1"])
    assert result.exit_code == 2
    assert "all-in figure" in result.stderr and result.stderr.strip().count("\n") == 0


def test_energy_undefined_term_prints_as_undefined() -> None:
    result = runner.invoke(app, ["energy", "dit-tiny", "--costs", "loihi", "--convention", "strict",
                                 "--sample-steps", "2"])  # a sampling run; its length does not matter here
    assert result.exit_code == 0, result.output
    assert "not defined by loihi" in result.stdout and "undefined" in result.stdout


def test_energy_measure_on_the_cpu_measures_target_and_baseline_by_rapl(tmp_path: Path, monkeypatch) -> None:
    import profiling.meters.rapl

    zone = tmp_path / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    for name, text in (("name", "package-0"), ("energy_uj", "1000"), ("max_energy_range_uj", "262143328850")):
        (zone / name).write_text(text + "\n")  # a counter that stands still: 0 J in every window
    monkeypatch.setattr(profiling.meters.rapl, "DEFAULT_ROOT", tmp_path / "powercap")
    out = tmp_path / "e.json"
    result = runner.invoke(app, ["energy", "sdit-tiny", "--baseline", "dit-tiny", "--measure", "--device", "cpu",
                                 "--meter", "cpu", "--idle-s", "0.01", "--min-window-s", "0", "--sample-steps", "2",
                                 "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    for key in ("measured", "baseline_measured"):
        m = data[key]
        assert m["device"] == "cpu" and m["method"] == "counter" and m["energy_j_per_image"] == 0.0
        assert m["meter"] == "RAPL package energy counter (package-0): CPU packages only, no DRAM or GPU"
    assert data["baseline_measured_reason"] is None
    lines = [line for line in result.stdout.splitlines() if line.startswith("measured ")]
    assert [line.split(":")[0] for line in lines] == ["measured sdit-tiny", "measured dit-tiny"]


def test_energy_measure_says_why_for_target_and_baseline_once(tmp_path: Path, monkeypatch) -> None:
    import profiling.meters.rapl

    monkeypatch.setattr(profiling.meters.rapl, "DEFAULT_ROOT", tmp_path / "absent")
    out = tmp_path / "e.json"
    result = runner.invoke(app, ["energy", "sdit-tiny", "--baseline", "dit-tiny", "--measure", "--device", "cpu",
                                 "--sample-steps", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    why = f"no RAPL: {tmp_path / 'absent'} does not exist (no powercap interface in this kernel or container)"
    assert data["measured_reason"] == data["baseline_measured_reason"] == why
    flat = " ".join(result.stdout.split())  # lines wrap at spaces at the terminal's width
    assert flat.count("unavailable") == 1 and f"measured energy unavailable: {why}" in flat


def test_energy_rejects_an_unknown_meter() -> None:
    result = runner.invoke(app, ["energy", "dit-tiny", "--measure", "--meter", "rapl"])
    assert result.exit_code == 2
    assert "--meter 'rapl': valid meters are auto, nvml, cpu" in result.output


def test_energy_memory_model_and_the_verdict_matrix(tmp_path: Path) -> None:
    out = tmp_path / "e.json"
    result = runner.invoke(app, ["energy", "sdit-tiny", "--baseline", "dit-tiny", "--method", "forward",
                                 "--memory", "no-reuse", "--json", str(out)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["costs"]["memory"] == "no-reuse:step-3.12pj-bit"
    matrix = data["verdict_matrix"]
    assert {(r["convention"], r["memory"].split(":")[0]) for r in matrix} == {
        (c, m) for c in ("strict", "paper", "block", "spikformer") for m in MEMORY_MODELS}
    for row in matrix:  # a break-even is a rate in 0..1 with its percentage, or words
        if row["break_even"] is None:
            assert row["break_even_text"] and not any(ch.isdigit() for ch in row["break_even_text"][:1])
        else:
            assert 0 <= row["break_even"] <= 1 and row["break_even_text"] == f"{row['break_even']:.2%}"
    assert "verdict matrix" in result.stdout and "no-reuse" in result.stdout


def test_energy_rejects_an_unknown_memory_model_in_one_line() -> None:
    result = runner.invoke(app, ["energy", "dit-tiny", "--memory", "lemaire:45nm-dram"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "prices by buffer size" in result.stderr


def test_energy_of_a_preset_says_untrained_beside_every_rate_dependent_figure() -> None:
    result = runner.invoke(app, ["energy", "sdit-tiny", "--baseline", "dit-tiny", "--method", "forward"],
                           env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    titles = [line for line in lines if line.startswith("sdit-tiny") or line.startswith("verdict matrix")]
    assert len(titles) == 3 and all("untrained weights" in line for line in titles)  # table, verdict, matrix
    verdict = next(line for line in lines if "mean firing rate" in line)
    assert verdict.startswith("sdit-tiny (untrained weights): mean firing rate 0.000%; estimated energy")
    rates = [line for line in lines if line.startswith("  ") and line.strip().split(":")[0] in
             ("strict", "paper", "block", "spikformer")]
    assert len(rates) == 4 and all("sdit-tiny: untrained weights, fires at 0.000%" in line for line in rates)
    assert "dit-tiny: no spiking neurons (ANN)" in lines
