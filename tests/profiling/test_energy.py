"""Estimated energy: exact joules from counts and the cited constants."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from profiling.energy import (
    COST_PRESETS,
    CostsError,
    EnergyCosts,
    break_even_rate,
    estimate,
    load_costs,
    with_overrides,
)
from profiling.workloads import profile_forward, profile_sampling
from sdit.models import build_model
from tests.profiling.firing import firing_sdit_tiny

FP32, FP16 = COST_PRESETS["45nm-fp32"], COST_PRESETS["45nm-fp16"]


@pytest.fixture(scope="module")
def dit_tiny():
    return profile_forward(build_model("dit-tiny"), name="dit-tiny", batch_size=2)


@pytest.fixture(scope="module")
def firing_sdit():
    return firing_sdit_tiny(batch_size=2)


def test_presets_cite_horowitz_2014() -> None:
    assert (FP32.e_mac_pj, FP32.e_ac_pj) == (4.6, 0.9)
    assert (FP16.e_mac_pj, FP16.e_ac_pj) == (1.5, 0.4)
    assert (COST_PRESETS["45nm-int8"].e_mac_pj, COST_PRESETS["45nm-int8"].e_ac_pj) == (0.23, 0.03)
    assert all("Horowitz" in c.source and "ISSCC 2014" in c.source for n, c in COST_PRESETS.items() if n[:4] == "45nm")


def test_fp32_energy_of_dit_tiny_is_hand_computed(dit_tiny) -> None:
    result = estimate(dit_tiny, FP32)
    # 499,712 MACs x 4.6 pJ, no ACs in an ANN
    assert result.per_image["mac_j"] == pytest.approx(499_712 * 4.6e-12, rel=1e-12)
    assert result.per_image["ac_j"] == 0
    assert result.total_j == pytest.approx(2.2986752e-6, rel=1e-12)
    assert result.per_image["memory_j"] is None and result.per_image["neuron_j"] is None


def test_layers_sum_to_total(firing_sdit) -> None:
    for convention in ("strict", "paper"):
        result = estimate(firing_sdit, FP32, convention)
        for column in ("mac_j", "ac_j", "compute_j"):
            assert sum(row[column] for row in result.layers.values()) == pytest.approx(result.per_image[column])


def test_changing_preset_scales_the_right_columns(firing_sdit) -> None:
    e32, e16 = estimate(firing_sdit, FP32), estimate(firing_sdit, FP16)
    assert e16.per_image["mac_j"] == pytest.approx(e32.per_image["mac_j"] * 1.5 / 4.6)
    p32, p16 = estimate(firing_sdit, FP32, "paper"), estimate(firing_sdit, FP16, "paper")
    assert p16.per_image["ac_j"] == pytest.approx(p32.per_image["ac_j"] * 0.4 / 0.9)
    assert p32.per_image["ac_j"] > 0


def test_optional_terms_stay_in_their_columns(dit_tiny) -> None:
    costs = with_overrides(FP32, e_mem_pj_per_byte=2.0, e_neuron_update_pj=0.5)
    result = estimate(dit_tiny, costs)
    assert result.per_image["memory_j"] == pytest.approx(2.0e-12 * dit_tiny.per_image["bytes"])
    assert result.per_image["neuron_j"] == 0  # an ANN updates no neurons
    assert result.per_image["compute_j"] == estimate(dit_tiny, FP32).per_image["compute_j"]
    assert result.total_j == pytest.approx(result.per_image["compute_j"] + result.per_image["memory_j"])
    assert "overridden by the user" in costs.source


def test_per_step_energy_of_a_sampling_run() -> None:
    run = profile_sampling(build_model("dit-tiny"), name="dit-tiny", sample_steps=3)
    result = estimate(run, FP32)
    assert len(result.per_step) == 3
    assert sum(s["mac_j"] for s in result.per_step) == pytest.approx(result.per_image["mac_j"])


def test_firing_rate_sweep_and_break_even(firing_sdit) -> None:
    paper = estimate(firing_sdit, FP32, "paper")
    at_measured = paper.energy_at_rate_j(0.0)
    silent = paper.counts["macs"] * 4.6e-12
    assert at_measured == pytest.approx(silent)  # silent neurons: only the non-converted MACs
    full = paper.energy_at_rate_j(1.0)
    assert full - at_measured == pytest.approx(0.9e-12 * paper.counts["convertible"])
    target = (at_measured + full) / 2
    assert break_even_rate(paper, target) == pytest.approx(0.5)
    assert paper.sweep([0.0, 1.0]) == [{"firing_rate": 0.0, "energy_j": at_measured},
                                       {"firing_rate": 1.0, "energy_j": full}]


def test_break_even_is_none_for_an_ann(dit_tiny) -> None:
    assert break_even_rate(estimate(dit_tiny, FP32, "paper"), 1e-6) is None


def test_costs_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "chip.toml"
    path.write_text('e_mac_pj = 3.0\ne_ac_pj = 0.5\nsource = "our chip, measured 2026"\n')
    costs = load_costs(str(path))
    assert costs == EnergyCosts(str(path), 3.0, 0.5, "our chip, measured 2026")
    path.write_text('e_mac_pj = 3.0\nsource = "x"\n')
    with pytest.raises(CostsError, match="missing e_ac_pj"):
        load_costs(str(path))
    path.write_text('e_mac_pj = -1.0\ne_ac_pj = 0.5\nsource = "x"\n')
    with pytest.raises(CostsError, match="e_mac_pj must be a finite number >= 0"):
        load_costs(str(path))
    with pytest.raises(CostsError, match="neither a preset"):
        load_costs("45nm-fp64")


def test_bytes_of_a_linear_are_exact() -> None:
    from profiling.counter import LayerCounter

    layer = nn.Linear(4, 3)
    with LayerCounter(layer) as counter, torch.no_grad(), counter.step():
        layer(torch.randn(2, 4))
    ((_, layers),) = counter.finish()[0]
    assert layers["(model)"]["bytes"] == (3 + 2 * 4 + 4 * 3 + 2 * 3) * 4  # bias, x, W^T, out in float32
