"""Counting conventions against closed forms on a tiny spiking model; cost presets and their evidence."""

from __future__ import annotations

import math

import pytest
import torch
from spikingjelly.activation_based import functional, neuron
from torch import nn

from profiling.conventions import (
    COUNTING_CONVENTIONS,
    ConventionError,
    get_convention,
    spike_fed_macs,
    split_steps,
)
from profiling.counter import LayerCounter
from profiling.energy import (
    COST_PRESETS,
    EVIDENCE_GRADES,
    MEMORY_PRESETS,
    CostsError,
    EnergyCosts,
    break_even_rate,
    estimate,
    with_memory,
    with_overrides,
)
from profiling.profile import build_profile
from profiling.records import Profile
from profiling.workloads import profile_forward
from sdit.models import build_model
from sdit.workload import Workload

T, B, D_IN, D, D_OUT = 4, 3, 5, 6, 2
COSTS = EnergyCosts("test", 4.6, 0.9, "test constants")


class Block(nn.Module):
    """fc1 reads the real-valued residual stream; fc2 reads lif1's spikes."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(D, D, bias=False)
        self.lif1 = neuron.LIFNode(step_mode="m")
        self.fc2 = nn.Linear(D, D, bias=False)
        self.lif2 = neuron.LIFNode(step_mode="m")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (T, B, D)
        return x + self.lif2(self.fc2(self.lif1(self.fc1(x))))


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(D_IN, D, bias=False)
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(D, D_OUT, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D_IN)
        h = self.enc(x).unsqueeze(0).repeat(T, 1, 1)  # (T, B, D)
        for block in self.blocks:
            h = block(h)
        return self.head(h.mean(0))  # (B, D_OUT)


@pytest.fixture(scope="module")
def tiny() -> Profile:
    torch.manual_seed(4)  # every LIF layer fires at 1-45 % in both calls
    model = Tiny()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(3.0)
    with LayerCounter(model) as counter, torch.no_grad():
        for index, t in enumerate((7, 3)):
            with counter.step(index=index, t=t):
                model(torch.randn(B, D_IN))
            functional.reset_net(model)
    steps, unsupported = counter.finish()
    return build_profile(steps, unsupported, model="tiny", kind="sdit", workload=Workload.ddim(2, batch_size=B),
                         batch_size=B, time_steps=T, in_spiking_block=counter.in_spiking_block, blocks=counter.blocks)


def _rows(profile: Profile, step: int) -> dict[str, object]:
    return {r.layer: r for r in profile.steps_of(step)}


def _rate(row) -> float:
    return row.spikes / row.neuron_updates


def _block_rate(rows, block: str) -> float:
    lifs = [rows[f"{block}.lif1"], rows[f"{block}.lif2"]]
    return sum(r.spikes for r in lifs) / sum(r.neuron_updates for r in lifs)


DENSE = {"enc": D_IN * D, "head": D * D_OUT, **{f"blocks.{i}.fc{j}": T * D * D for i in (0, 1) for j in (1, 2)}}


def test_the_tiny_model_fires_and_its_blocks_are_found(tiny: Profile) -> None:
    assert {r.name: r.dense_macs for r in tiny.layers if r.dense_macs} == {k: 2 * v for k, v in DENSE.items()}
    assert {r.layer: r.dense_macs for r in tiny.steps_of(1) if r.dense_macs} == DENSE
    for step in (0, 1):
        rows = _rows(tiny, step)
        assert all(0 < _rate(rows[f"blocks.{i}.lif{j}"]) < 1 for i in (0, 1) for j in (1, 2))
    assert tiny.layer("blocks.1.fc2").block == "blocks.1" and tiny.layer("head").block is None


def test_strict_is_op_by_op(tiny: Profile) -> None:
    for step, splits in enumerate(split_steps(tiny, "strict")):
        rows = _rows(tiny, step)
        for i in (0, 1):
            assert splits[f"blocks.{i}.fc1"].macs == T * D * D and splits[f"blocks.{i}.fc1"].acs == 0
            # a spike input: nnz(lif1 output) x fan-out D, exactly
            assert splits[f"blocks.{i}.fc2"].acs == rows[f"blocks.{i}.lif1"].spikes * D
            assert splits[f"blocks.{i}.fc2"].macs == 0
        assert splits["enc"].macs == D_IN * D and splits["head"].macs == D * D_OUT


def test_paper_charges_each_op_at_its_nearest_upstream_spiking_layer(tiny: Profile) -> None:
    for step, splits in enumerate(split_steps(tiny, "paper")):
        rows = _rows(tiny, step)
        assert splits["blocks.0.fc1"].macs == T * D * D and splits["blocks.0.fc1"].acs == 0  # nothing fired yet
        assert splits["blocks.0.fc2"].acs == pytest.approx(_rate(rows["blocks.0.lif1"]) * T * D * D, rel=1e-12)
        assert splits["blocks.1.fc1"].acs == pytest.approx(_rate(rows["blocks.0.lif2"]) * T * D * D, rel=1e-12)
        assert splits["blocks.1.fc2"].acs == pytest.approx(_rate(rows["blocks.1.lif1"]) * T * D * D, rel=1e-12)
        assert splits["head"].macs == D * D_OUT and splits["enc"].macs == D_IN * D  # outside blocks: strict


def test_spike_fed_ops_are_the_ones_the_paper_charges_at_a_rate(tiny: Profile) -> None:
    fed = spike_fed_macs(tiny)
    assert {k: v for k, v in fed.items() if v} == {k: 2 * DENSE[k] for k in ("blocks.0.fc2", "blocks.1.fc1",
                                                                           "blocks.1.fc2")}
    total = sum(s.convertible for step in split_steps(tiny, "paper") for n, s in step.items() if fed[n])
    assert total == sum(fed.values())


def test_paper_convention_of_a_firing_sdit() -> None:
    model = build_model("sdit-tiny")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(8.0)
    profile = profile_forward(model, name="m", batch_size=2, seed=1)
    (paper,) = split_steps(profile, "paper")
    key = profile.layer("in_blocks.0.channel_mixing.key")
    upstream = profile.layer("in_blocks.0.attn_lif")
    assert key.upstream_neuron == "in_blocks.0.attn_lif"
    assert paper[key.name].macs == 0
    assert paper[key.name].acs == pytest.approx(upstream.firing_rate * key.dense_macs)
    # the first block's TimeMixing runs before any spiking layer: MACs in both conventions
    first = profile.layer("in_blocks.0.time_mixing.key")
    assert paper[first.name].macs == first.macs and paper[first.name].acs == 0
    assert sum(s.macs + s.acs for s in paper.values()) < profile.per_image["macs"]


def test_block_charges_every_op_in_a_block_at_the_block_rate(tiny: Profile) -> None:
    for step, splits in enumerate(split_steps(tiny, "block")):
        rows = _rows(tiny, step)
        for i in (0, 1):
            rate = _block_rate(rows, f"blocks.{i}")
            for j in (1, 2):
                split = splits[f"blocks.{i}.fc{j}"]
                assert split.macs == 0 and split.convertible == T * D * D
                assert split.acs == pytest.approx(rate * T * D * D, rel=1e-12)
        assert splits["head"].macs == D * D_OUT and splits["enc"].macs == D_IN * D


def test_spikformer_keeps_only_the_encoder_at_mac_cost(tiny: Profile) -> None:
    for step, splits in enumerate(split_steps(tiny, "spikformer")):
        rows = _rows(tiny, step)
        assert splits["enc"].macs == D_IN * D and splits["enc"].acs == 0
        # no spiking layer precedes blocks.0.fc1: its block's rate
        assert splits["blocks.0.fc1"].acs == pytest.approx(_block_rate(rows, "blocks.0") * T * D * D, rel=1e-12)
        assert splits["blocks.0.fc2"].acs == rows["blocks.0.lif1"].spikes * D  # spike input: exact
        assert splits["blocks.1.fc1"].acs == pytest.approx(_rate(rows["blocks.0.lif2"]) * T * D * D, rel=1e-12)
        assert splits["head"].acs == pytest.approx(_rate(rows["blocks.1.lif2"]) * D * D_OUT, rel=1e-12)
        assert all(s.macs == 0 for name, s in splits.items() if name != "enc")


@pytest.mark.parametrize("convention", list(COUNTING_CONVENTIONS))
def test_energy_under_each_convention_is_the_sum_of_its_steps_and_layers(tiny: Profile, convention: str) -> None:
    result = estimate(tiny, COSTS, convention)
    splits = split_steps(tiny, convention)
    macs = math.fsum(s.macs for step in splits for s in step.values())
    acs = math.fsum(s.acs for step in splits for s in step.values())
    assert result.per_image["compute_j"] == pytest.approx((4.6 * macs + 0.9 * acs) * 1e-12, rel=1e-12)
    assert math.fsum(s["compute_j"] for s in result.per_step) == pytest.approx(result.per_image["compute_j"])
    assert math.fsum(v["compute_j"] for v in result.layers.values()) == pytest.approx(result.per_image["compute_j"])
    assert result.total_j == result.per_image["compute_j"]  # no neuron term, memory off
    # the sweep is linear and passes through the measured-rate value at fr = break-even of itself
    assert break_even_rate(result, result.energy_at_rate_j(0.25)) == pytest.approx(0.25)


def test_every_convention_is_strict_for_an_ann() -> None:
    profile = profile_forward(build_model("dit-tiny"), name="dit-tiny")
    strict = estimate(profile, COSTS, "strict").per_image
    for name in COUNTING_CONVENTIONS:
        assert estimate(profile, COSTS, name).per_image == strict
        assert break_even_rate(estimate(profile, COSTS, name), 1e-6) is None


def test_unknown_convention_is_named() -> None:
    with pytest.raises(ConventionError, match="unknown convention 'fancy'; known: strict, paper, block, spikformer"):
        get_convention("fancy")


# ---- presets ---------------------------------------------------------------------------------------


def test_presets_carry_evidence_scope_and_citation() -> None:
    for costs in COST_PRESETS.values():
        assert costs.evidence in EVIDENCE_GRADES and costs.evidence != "not stated"
        assert costs.process and costs.checked and costs.scope in ("per-op", "all-in")
    loihi, truenorth, spinnaker = COST_PRESETS["loihi"], COST_PRESETS["truenorth"], COST_PRESETS["spinnaker2"]
    assert (loihi.e_ac_pj, loihi.e_neuron_update_pj, loihi.evidence) == (23.6, 81.0, "pre-silicon simulation")
    assert "IEEE Micro 38(1)" in loihi.source and "Table 2" in loihi.source
    assert (truenorth.e_ac_pj, truenorth.scope, truenorth.evidence) == (26.0, "all-in", "measured on silicon")
    assert "Science 345(6197)" in truenorth.source
    assert (spinnaker.e_ac_pj, spinnaker.e_neuron_update_pj) == (450.0, 2190.0) and "TCAS-I 66(8)" in spinnaker.source
    assert all("Horowitz" in m.source and "ISSCC 2014" in m.source for m in MEMORY_PRESETS.values() if m.process)


def test_an_all_in_preset_refuses_added_terms() -> None:
    truenorth = COST_PRESETS["truenorth"]
    with pytest.raises(CostsError, match="all-in figure .* no term may be added to it \\(e_neuron_update_pj\\)"):
        with_overrides(truenorth, e_neuron_update_pj=1.0)
    with pytest.raises(CostsError, match="truenorth is an all-in figure: no memory term may be added"):
        with_memory(truenorth, "45nm-sram-8kb")
    assert with_overrides(truenorth, e_ac_pj=20.0).e_ac_pj == 20.0  # replacing its own figure is fine


def test_an_undefined_term_is_reported_as_undefined(tiny: Profile) -> None:
    loihi = COST_PRESETS["loihi"]
    assert loihi.terms()["mac"] == "not defined by loihi" and loihi.terms()["ac"].startswith("23.6 pJ per AC")
    result = estimate(tiny, loihi, "paper")
    assert result.undefined == {"mac": "not defined by loihi"}
    assert result.per_image["mac_j"] is None and result.per_image["total_j"] is None  # the paper keeps MACs
    assert result.per_image["neuron_j"] == pytest.approx(81e-12 * tiny.per_image["neuron_updates"])
    assert break_even_rate(result, 1e-6) is None
    # with no MAC left to charge, the total is defined without the undefined term
    all_ac = estimate(tiny, loihi, "block")
    assert all_ac.per_image["mac_j"] is None
    assert tiny.per_image["macs"] and all_ac.total_j is None  # enc and head stay MACs outside blocks


def test_memory_term_is_off_unless_asked(tiny: Profile) -> None:
    off = estimate(tiny, COSTS, "strict")
    assert off.per_image["memory_j"] is None and "memory" not in off.included
    on = estimate(tiny, with_memory(COSTS, "45nm-sram-8kb"), "strict")
    assert on.per_image["memory_j"] == pytest.approx(1.25e-12 * tiny.per_image["bytes"])
    assert on.total_j == pytest.approx(off.total_j + on.per_image["memory_j"])
    with pytest.raises(CostsError, match="unknown memory preset 'l9'"):
        with_memory(COSTS, "l9")
