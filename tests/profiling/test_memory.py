"""Memory models: spikingjelly's own estimators as anchors, closed forms for the rest (docs/memory.md)."""

from __future__ import annotations

import pytest
import torch
from spikingjelly.activation_based import functional, layer, neuron
from spikingjelly.activation_based.op_counter import (
    LemaireEnergyConfig,
    estimate_lemaire_energy,
    estimate_simple_energy,
)
from torch import nn

from profiling.energy import COST_PRESETS, CostsError, break_even, estimate, with_memory
from profiling.memory import LEMAIRE_ELEMENTWISE, MEMORY_PRESETS, resolve_memory
from profiling.workloads import profile_module
from sdit.models import build_model
from tests.profiling.firing import firing_sdit_tiny

FP32 = COST_PRESETS["45nm-fp32"]
STEP = 24.96e-12  # J per byte: spikingjelly's default memory price, our step-3.12pj-bit


def _ours_and_spikingjelly(model: nn.Module, inputs: tuple, **kwargs):
    """Our no-reuse estimate (strict) and spikingjelly's simple report, on the same input, batch 1."""
    model.eval()
    functional.reset_net(model)
    ours = profile_module(model, inputs, name="m", **kwargs)
    functional.reset_net(model)
    theirs = estimate_simple_energy(model, inputs)
    functional.reset_net(model)
    return ours, estimate(ours, with_memory(FP32, "no-reuse"), "strict"), theirs


def _assert_equal_to_simple(profile, est, report) -> None:
    counts = report.counts
    assert profile.per_image["weight_reads"] == counts["weight_read_bytes"]
    assert profile.per_image["bias_reads"] == counts["bias_read_bytes"]
    assert profile.per_image["state_bytes"] == counts["neuron_state_read_bytes"] == counts["neuron_state_write_bytes"]
    assert est.counts["memory_bytes"] == counts["memory_access_bytes"]
    assert est.per_image["memory_j"] == pytest.approx(report.energy_memory_pj * 1e-12, rel=1e-9)
    parts = est.memory_parts
    assert parts["weights"] + parts["biases"] == pytest.approx(report.breakdown_pj["parameter_memory_pj"] * 1e-12,
                                                               rel=1e-9)
    assert parts["states"] == pytest.approx(report.breakdown_pj["neuron_state_memory_pj"] * 1e-12, rel=1e-9)


def _forward_inputs(model: nn.Module) -> tuple:
    c = model.config
    torch.manual_seed(0)
    channels = getattr(c, "channels", getattr(c, "in_channels", 1))
    return torch.randn(1, channels, c.image_size, c.image_size), torch.tensor([500])


@pytest.mark.parametrize("name", ["sdit-tiny", "checkpoints/dit-small-fmnist", "checkpoints/sdit-small-sd-fmnist"])
def test_no_reuse_is_spikingjelly_simple_energy(name: str) -> None:
    if name.startswith("checkpoints/"):
        from sdit.targets import load_target

        model = load_target(name).model
    else:
        model = build_model(name)
    p, est, report = _ours_and_spikingjelly(model, _forward_inputs(model))
    _assert_equal_to_simple(p, est, report)
    if p.is_spiking:
        assert p.per_image["state_bytes"] > 0


@pytest.fixture(scope="module")
def zoo():
    """Ours and spikingjelly's on a spiking VGG-11 (LIF) and a SEW-ResNet-18 (IF, ADD), T = 1, 32 x 32."""
    import sys
    import types

    monkeypatch = pytest.MonkeyPatch()

    # The zoo imports torchvision only to download pretrained weights, which these tests never do.
    stub = types.ModuleType("torchvision._internally_replaced_utils")
    stub.load_state_dict_from_url = None
    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
    monkeypatch.setitem(sys.modules, "torchvision._internally_replaced_utils", stub)
    from spikingjelly.activation_based.model import sew_resnet, spiking_vgg

    torch.manual_seed(0)
    vgg = spiking_vgg.spiking_vgg11(num_classes=10, spiking_neuron=neuron.LIFNode)
    sew = sew_resnet.sew_resnet18(num_classes=10, spiking_neuron=neuron.IFNode, cnf="ADD")
    for model in (vgg, sew):
        functional.set_step_mode(model, "m")
    x = torch.rand(1, 1, 3, 32, 32)  # (T, B, C, H, W): real-valued input, as an encoder sees
    out = [_ours_and_spikingjelly(model, (x,), batch_size=1) for model in (vgg, sew)]
    monkeypatch.undo()
    return out


def test_no_reuse_states_and_biases_are_spikingjelly_simple_energy_on_its_zoo(zoo) -> None:
    for p, _, report in zoo:
        assert p.per_image["bias_reads"] == report.counts["bias_read_bytes"]
        assert p.per_image["state_bytes"] == report.counts["neuron_state_read_bytes"] > 0


def test_no_reuse_weights_are_spikingjelly_simple_energy_on_its_vgg(zoo) -> None:
    p, est, report = zoo[0]  # max-pooled spike maps stay spikes (profiling.spikes), as spikingjelly finds by value
    _assert_equal_to_simple(p, est, report)


def test_sew_add_outputs_are_counts_here_and_spikes_to_spikingjelly_where_binary(zoo) -> None:
    """SEW's ADD of two spike maps yields counts (0, 1, 2): strict counting reads them as real values, so the
    convs after them read their weights densely here; spikingjelly decides by value, and an ADD output that
    happens to hold only 0 and 1 (a silent or non-overlapping map) is spikes to it (docs/memory.md)."""
    p, _, report = zoo[1]
    assert p.per_image["weight_reads"] > report.counts["weight_read_bytes"]


class _ConvLinearLIF(nn.Module):
    """Conv / Linear modules with LIF and IF neurons only: the models Lemaire et al.'s formulas cover."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = layer.Conv2d(1, 4, 3, padding=1, step_mode="m")
        self.lif1 = neuron.LIFNode(step_mode="m")
        self.conv2 = layer.Conv2d(4, 8, 3, stride=2, padding=1, bias=False, step_mode="m")
        self.lif2 = neuron.IFNode(step_mode="m")
        self.fc = layer.Linear(8 * 4 * 4, 10, step_mode="m")
        self.lif3 = neuron.LIFNode(step_mode="m")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lif2(self.conv2(self.lif1(self.conv1(x))))
        return self.lif3(self.fc(x.flatten(2)))


def test_lemaire_is_spikingjelly_lemaire_energy() -> None:
    torch.manual_seed(0)
    model = _ConvLinearLIF().eval()
    with torch.no_grad():
        model.conv1.weight.mul_(4.0)
    x = torch.rand(3, 1, 1, 8, 8)
    functional.reset_net(model)
    p = profile_module(model, (x,), name="net", batch_size=1)
    functional.reset_net(model)
    report = estimate_lemaire_energy(model, (x,), config=LemaireEnergyConfig(strict=True))
    est = estimate(p, with_memory(FP32, "lemaire"), "strict")
    parts, counts = est.memory_parts, report.counts
    assert p.per_image["spikes"] > 0 and p.per_image["spike_events"] > 0  # the event-driven paths ran
    for ours, theirs in (("read_in_bytes", "read_in_bytes"), ("write_out_bytes", "write_out_bytes"),
                         ("read_params_bytes", "read_params_bytes"), ("read_potential_bytes", "read_potential_bytes"),
                         ("write_potential_bytes", "write_potential_bytes")):
        assert parts[ours] == counts[theirs], ours
    assert (p.per_image["addr_acc"] + p.per_image["addr_kernel"], p.per_image["addr_mac"]) == (
        counts["acc_addr"], counts["mac_addr"])
    for ours, theirs in (("inout", "inout_pj"), ("params", "params_pj"), ("potential", "potential_pj"),
                         ("addressing", "addressing_pj")):
        assert parts[ours] == pytest.approx(report.breakdown_pj[theirs] * 1e-12, rel=1e-9), ours
    assert est.unassigned == {}


def test_lemaire_price_curve() -> None:
    curve = MEMORY_PRESETS["45nm-sram-lemaire"]
    assert (curve.price(8192), curve.price(20480), curve.price(4096), curve.price(1e9)) == (2.5, 3.75, 1.25, 25.0)


def test_no_reuse_follows_the_convention_and_lists_activation_products() -> None:
    p = profile_module(build_model("dit-tiny"), _forward_inputs(build_model("dit-tiny")), name="dit")
    est = estimate(p, with_memory(FP32, "no-reuse"), "strict")
    # fp32 weights read once per MAC of every Linear, biases once per output element, no neuron state
    assert est.memory_parts["weights_bytes"] == 4 * p.per_image["weight_uses"]
    assert est.per_image["memory_j"] == pytest.approx(STEP * (4 * p.per_image["weight_uses"]
                                                              + p.per_image["bias_reads"]), rel=1e-12)
    assert {why.split(" (")[0] for why in est.unassigned.values()} == {"synaptic op on activations"}
    assert p.per_image["weight_uses"] < p.per_image["macs"]  # the attention products are MACs on activations


def test_no_reuse_weight_reads_move_with_the_firing_rate(firing_sdit) -> None:
    paper = estimate(firing_sdit, with_memory(FP32, "no-reuse"), "paper")
    convertible = paper.counts["convertible"]
    slope = paper.energy_at_rate_j(1.0) - paper.energy_at_rate_j(0.0)
    # each AC the sweep charges costs 0.9 pJ plus one fp32 weight read at 24.96 pJ/byte (all Linear layers here)
    assert paper.counts["memory_convertible_j"] == pytest.approx(4 * STEP * convertible, rel=1e-12)
    assert slope == pytest.approx(convertible * (0.9e-12 + 4 * STEP), rel=1e-9)


@pytest.fixture(scope="module")
def firing_sdit():
    return firing_sdit_tiny(batch_size=1)


def test_memory_specs_resolve_and_refuse_in_one_line() -> None:
    assert resolve_memory("45nm-sram-32kb").spec == "operand-once:45nm-sram-32kb"  # the preset names still work
    assert resolve_memory("default").spec == "operand-once:45nm-sram-8kb"
    assert resolve_memory("no-reuse").spec == "no-reuse:step-3.12pj-bit"
    assert resolve_memory("no-reuse:45nm-dram").preset.pj_per_byte == 1300 / 8
    assert resolve_memory(None).spec == resolve_memory("none").spec == "none"
    for bad, message in (("lemaire:45nm-dram", "prices by buffer size"), ("no-reuse:x", "unknown memory preset 'x'"),
                         ("fast", "unknown memory preset 'fast'")):
        with pytest.raises(CostsError, match=message) as err:
            with_memory(FP32, bad)
        assert "\n" not in str(err.value)


def test_a_break_even_outside_0_to_1_is_words(firing_sdit) -> None:
    paper = estimate(firing_sdit, FP32, "paper")
    silent, full = paper.energy_at_rate_j(0.0), paper.energy_at_rate_j(1.0)
    assert break_even(paper, (silent + full) / 2)[0] == pytest.approx(0.5)
    assert break_even(paper, silent / 2) == (None, "none: dearer than the baseline even when silent")
    assert break_even(paper, full * 2) == (None, "none: cheaper than the baseline even at 100 % firing")


class _Op(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.fn(*xs)


def _lemaire_of(fn, *inputs: torch.Tensor):
    p = profile_module(_Op(fn), inputs, name="op", batch_size=1)
    return p, estimate(p, with_memory(FP32, "lemaire"), "strict")


LEMAIRE = MEMORY_PRESETS["45nm-sram-lemaire"]


@pytest.mark.parametrize(("fn", "column", "reads"), [
    (lambda x: nn.functional.layer_norm(x, (16,)), "norm", 2),  # statistics pass + normalise pass
    (lambda x: x.softmax(-1), "softmax", 2),  # max/sum pass + normalise pass
    (nn.functional.silu, "exp", 1),  # unary transcendentals: SiLU, GELU
    (nn.functional.gelu, "exp", 1),
])
def test_lemaire_extended_to_elementwise_ops_in_closed_form(fn, column, reads) -> None:
    x = torch.randn(1, 8, 16)
    p, est = _lemaire_of(fn, x)
    n = 8 * 16
    assert p.per_image[column] == n and est.unassigned == {}
    buffer = 4 * n  # the layer's elementwise results, in 32-bit words
    assert est.memory_parts["read_in_bytes"] == reads * 4 * n
    assert est.memory_parts["write_out_bytes"] == 4 * n
    assert est.per_image["memory_j"] == pytest.approx((reads + 1) * 4 * n * LEMAIRE.price(buffer) * 1e-12, rel=1e-12)


def test_lemaire_extended_to_activation_products_in_closed_form() -> None:
    q, k, v = torch.randn(1, 2, 8, 4), torch.randn(1, 2, 8, 4), torch.randn(1, 2, 8, 4)
    p, est = _lemaire_of(lambda q, k, v: (q @ k.transpose(-2, -1)) @ v, q, k, v)
    macs = 2 * 8 * 8 * 4 * 2  # q k^T and attn v, two heads
    assert p.per_image["macs"] == macs and est.unassigned == {}
    operands = 4 * (3 * 2 * 8 * 4 + 2 * 2 * 8 * 8 + 2 * 8 * 4)  # q, k, v, attn (in and out), output: fp32
    assert p.per_image["bytes"] == operands
    assert est.memory_parts["read_in_bytes"] == 2 * 4 * macs  # both operands at each MAC
    assert est.per_image["memory_j"] == pytest.approx(2 * 4 * macs * LEMAIRE.price(operands) * 1e-12, rel=1e-12)


def test_lemaire_extended_to_spike_driven_products_in_closed_form() -> None:
    lif = neuron.IFNode(v_threshold=0.5)
    x, v = torch.rand(6, 5), torch.randn(5, 3)

    class SpikeProduct(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lif = lif

        def forward(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return self.lif(x) @ v

    p = profile_module(SpikeProduct(), (x, v), name="sp", batch_size=1)
    est = estimate(p, with_memory(FP32, "lemaire"), "strict")
    product = next(r for r in p.layer_steps if r.dense_macs)
    acs = product.acs  # nnz(spikes) x 3
    assert acs > 0 and product.macs == 0 and est.unassigned == {}
    cell = next(j for (_, layer), (_, j, _) in est_cells(p).items() if layer == product.layer)
    # per AC: read the real operand, read and write the running sum, 32-bit words at the operands' buffer
    assert cell == pytest.approx(3 * 4 * acs * LEMAIRE.price(product.bytes) * 1e-12, rel=1e-12)


def est_cells(p):
    from profiling.conventions import split_steps
    from profiling.memory import charge

    return charge(p, resolve_memory("lemaire"), split_steps(p, "strict")).cells


@pytest.mark.parametrize("name", ["sdit-tiny", "sdit-tiny-sd", "dit-tiny"])
def test_lemaire_leaves_nothing_unassigned_on_our_models(name: str) -> None:
    model = build_model(name)
    p = profile_module(model, _forward_inputs(model), name=name)
    est = estimate(p, with_memory(FP32, "lemaire"), "strict")
    assert est.unassigned == {}
    # WKV and token shift (TimeMixing): their counted elementwise ops, each by its column's words
    for r in p.layer_steps:
        if r.layer.endswith(".wkv"):
            words = sum((LEMAIRE_ELEMENTWISE[c][0] + LEMAIRE_ELEMENTWISE[c][1]) * getattr(r, c)
                        for c in LEMAIRE_ELEMENTWISE)
            total = sum(getattr(r, c) for c in LEMAIRE_ELEMENTWISE)
            assert est_cells(p)[(r.step, r.layer)][1] == pytest.approx(4 * words * LEMAIRE.price(4 * total) * 1e-12,
                                                                       rel=1e-12)


SRAM8, SRAM32, DRAM = (MEMORY_PRESETS[n].pj_per_byte * 1e-12 for n in ("45nm-sram-8kb", "45nm-sram-32kb", "45nm-dram"))


def _dataflow(model: nn.Module, inputs: tuple, spec: str = "dataflow:45nm-sram-8kb", convention: str = "strict"):
    p = profile_module(model.eval(), inputs, name="m", batch_size=1)
    return p, estimate(p, with_memory(FP32, spec), convention)


def test_dataflow_keeps_weights_that_fit_and_fetches_them_once() -> None:
    p, est = _dataflow(nn.Linear(16, 8), (torch.randn(1, 4, 16),))
    params, uses, bias, out = (16 * 8 + 8) * 4, 4 * 8 * 16 * 4, 4 * 8 * 4, 4 * 8 * 4
    parts = est.memory_parts
    assert (parts["weight_fetch_bytes"], parts["weights_bytes"], parts["activations_bytes"]) == (params, uses + bias,
                                                                                                  2 * out)
    assert parts["dram_bytes"] == params  # the fetch alone: the weights and the output fit the 8 KB beside them
    assert est.per_image["memory_j"] == pytest.approx(params * DRAM + (uses + bias + 2 * out) * SRAM8, rel=1e-12)


def test_dataflow_spills_weights_past_the_buffer() -> None:
    p, est = _dataflow(nn.Linear(128, 128, bias=False), (torch.randn(1, 2, 128),), "dataflow:45nm-sram-32kb")
    params, uses = 128 * 128 * 4, 2 * 128 * 128 * 4
    kept = 32768 / params  # half the weights stay; the other half is read from DRAM at each use
    out = 2 * 2 * 128 * 4  # the output written and read once: no room left beside the weights, so DRAM
    want = 32768 * DRAM + uses * (kept * SRAM32 + (1 - kept) * DRAM) + out * DRAM
    assert est.per_image["memory_j"] == pytest.approx(want, rel=1e-12)
    assert est.memory_parts["weight_fetch_bytes"] == 32768


def test_dataflow_moves_spikes_as_bits_and_potentials_at_their_width() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(neuron.IFNode(v_threshold=0.5, step_mode="m"))
    p, est = _dataflow(model, (torch.rand(4, 1, 32),))  # T = 4 steps of 32 neurons
    updates = 4 * 32
    parts = est.memory_parts
    assert parts["states_bytes"] == 2 * 4 * updates  # fp32 membrane potential read and written each step
    assert parts["spikes_bytes"] == 2 * updates / 8  # 1 bit per neuron and step, written and read once
    assert est.per_image["memory_j"] == pytest.approx((2 * 4 * updates + 2 * updates / 8) * SRAM8, rel=1e-12)


def test_dataflow_weight_reads_move_with_the_firing_rate(firing_sdit) -> None:
    paper = estimate(firing_sdit, with_memory(FP32, "dataflow:45nm-sram-1mb"), "paper")
    # every Linear of sdit-tiny fits 1 MB: each AC the sweep charges reads one fp32 weight from the buffer
    assert paper.counts["memory_convertible_j"] == pytest.approx(4 * 12.5e-12 * paper.counts["convertible"],
                                                                 rel=1e-12)


def test_dataflow_needs_a_buffer_size() -> None:
    assert resolve_memory("dataflow").spec == "dataflow:45nm-sram-32kb"
    for bad in ("dataflow:45nm-dram", "dataflow:step-3.12pj-bit", "dataflow:45nm-sram-lemaire"):
        with pytest.raises(CostsError, match="on-chip buffer size|prices by buffer size"):
            with_memory(FP32, bad)
