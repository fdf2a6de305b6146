"""scripts/spike_driven_table.py: the spike-driven comparison table, from the study library's own numbers."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest
import torch

from profiling.compare import compare
from sdit.models import build_model
from sdit.quality.heldout import held_out_eps_mse
from sdit.workload import Workload

ROOT = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("spike_driven_table", ROOT / "scripts" / "spike_driven_table.py")
table = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(table)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory, fashion_test) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("sd") / "table.json"
    args = ["sdit-tiny", "sdit-tiny-sd", "--baseline", "dit-tiny", "--steps", "2", "--num", "4", "--seed", "3",
            "--json", str(out)]
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        assert table.main(args) == 0
    return json.loads(out.read_text()), text.getvalue()


def test_energies_rates_and_break_even_are_the_study_libraries(written) -> None:
    result, _ = written
    names = ["sdit-tiny", "sdit-tiny-sd", "dit-tiny"]
    torch.manual_seed(3)  # the script seeds before building the untrained presets, in this order
    models = [(n, build_model(n)) for n in names]
    for key, work in (("forward", Workload.forward(500, seed=3)), ("ddim", Workload.ddim(2, eta=1.0, seed=3))):
        comparison = compare(models, work, costs=["45nm-fp32"], conventions=["strict", "paper"])
        for t in comparison.targets:
            row = result["targets"][t.name][key]
            for c in ("strict", "paper"):
                assert row["energy_uj"][c] == t.estimate("45nm-fp32", c).total_j * 1e6
            assert row["mean_firing_rate"] == t.profile.mean_firing_rate
        sd = comparison.break_even_of("sdit-tiny-sd", "dit-tiny", "45nm-fp32", "strict")
        assert result["targets"]["sdit-tiny-sd"][key]["break_even"]["strict"]["firing_rate"] == sd.firing_rate
        assert result["workload_dicts"][key] == work.to_dict()
    # the spike-driven block reads spikes everywhere inside: every synaptic op there is an AC, strict
    assert result["targets"]["sdit-tiny-sd"]["forward"]["in_block_ac_share"] == 1.0
    assert result["targets"]["sdit-tiny"]["forward"]["in_block_ac_share"] == 0.0
    assert result["targets"]["dit-tiny"]["forward"]["in_block_ac_share"] is None
    assert result["targets"]["dit-tiny"]["forward"]["break_even"] == {}


def test_eps_mse_is_the_held_out_loss_on_the_first_test_images(written, fashion_test) -> None:
    result, _ = written
    torch.manual_seed(3)
    models = {n: build_model(n) for n in ("sdit-tiny", "sdit-tiny-sd", "dit-tiny")}
    assert result["eps_mse_timesteps"] == [250, 500, 750, 900, 999]
    for name, model in models.items():
        assert result["targets"][name]["eps_mse"] == held_out_eps_mse(model, fashion_test.images[:4])


def test_markdown_rows_print_the_json_figures(written) -> None:
    result, text = written
    row = next(line for line in text.splitlines() if line.startswith("| sdit-tiny-sd |"))
    sd = result["targets"]["sdit-tiny-sd"]
    assert f"| {sd['forward']['energy_uj']['strict']:,.3f} | {sd['forward']['energy_uj']['paper']:,.3f} |" in row
    assert " / ".join(f"{sd['eps_mse'][str(t)]:.4g}" for t in (250, 500, 750, 900, 999)) in row
    assert "| dit-tiny (baseline) |" in text and "uJ per image over the whole workload" in text
    assert "sdit-tiny-sd = preset sdit-tiny-sd (untrained)" in text


def test_refuses_to_overwrite_and_reports_a_bad_target(written, tmp_path: Path, capsys) -> None:
    existing = tmp_path / "t.json"
    existing.write_text("keep")
    with pytest.raises(SystemExit) as exit_info:
        table.main(["sdit-tiny", "--baseline", "dit-tiny", "--no-eps", "--json", str(existing)])
    assert exit_info.value.code == 2 and existing.read_text() == "keep"
    assert "pass --overwrite" in capsys.readouterr().err
    assert table.main(["sdit-tiny", "--baseline", "missing/dir", "--no-eps"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: no checkpoint file or run directory at missing/dir"]


def test_break_even_text_names_rates_outside_zero_one() -> None:
    assert table._break_even_text({"firing_rate": -0.1224, "reason": None}) == "-12.24 % (dearer even silent)"
    assert table._break_even_text({"firing_rate": 1.5, "reason": None}) == "150.00 % (cheaper at any rate)"
    assert table._break_even_text({"firing_rate": None, "reason": "no rate"}) == "none"
    assert table._break_even_text(None) == "-"
    assert sys.modules.get("spike_driven_table") is None  # loaded from its file, not installed


def test_refuses_a_spiking_baseline_repeated_targets_and_no_images(capsys) -> None:
    assert table.main(["sdit-tiny", "--baseline", "sdit-tiny-sd", "--no-eps", "--steps", "1"]) == 1
    assert capsys.readouterr().err.strip() == ("error: --baseline sdit-tiny-sd is a spiking model; "
                                               "the break-even needs an ANN (a DiT)")
    for args, message in ((["dit-tiny", "--baseline", "dit-tiny"], "each target (and the baseline) once: dit-tiny"),
                          (["sdit-tiny", "--baseline", "dit-tiny", "--num", "0"], "--num must be at least 1, got 0")):
        with pytest.raises(SystemExit) as exit_info:
            table.main(args)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_an_undefined_cost_term_is_not_called_rate_independent() -> None:
    entry = {"firing_rate": None, "reason": "a term the totals need is not defined by loihi"}
    assert table._break_even_text(entry) == "n/a (a cost term is undefined)"


def test_a_test_split_of_another_shape_is_refused_before_any_study() -> None:
    with pytest.raises(ValueError, match=r"^sdit-tiny: the test split does not fit: expected images of shape "
                                         r"\(B, 1, 28, 28\), got \(2, 3, 32, 32\) \(pass --dataset or --no-eps\)$"):
        table.build(["sdit-tiny"], "dit-tiny", eps_images=torch.zeros(2, 3, 32, 32))
