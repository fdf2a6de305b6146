"""The peer suite: spikingjelly's model zoo (and snnTorch / Norse nets) counted by sdit and by value.

For each model, random weights with BatchNorm calibrated on the input (so spikes reach the last layers),
T = 2, one small image: the strict AC total equals an independent count by value
(:mod:`tests.profiling.value_count`: ACs = nnz x fan-out of every binary operand of a synaptic op) to
the unit, and so does spikingjelly's own ``SynOpCounter`` (the same quantity, also by value). The MAC
totals agree too. ``spike_detection="verify"`` finds nothing the rules missed. docs/peers.md tabulates
these totals.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from spikingjelly.activation_based import functional, layer, neuron
from torch import nn

import profiling
from profiling.records import Profile
from tests.profiling.value_count import value_count
from tests.profiling.zoo import zoo

T = 2


def _issue_example() -> nn.Module:
    return nn.Sequential(layer.Conv2d(1, 8, 3, padding=1), neuron.IFNode(), layer.MaxPool2d(2),
                         layer.Conv2d(8, 8, 3, padding=1))


def _narrow_head(vgg: nn.Module) -> nn.Module:
    """spiking_vgg11_bn with its classifier's hidden width 4096 cut to 64 (same layers, same neurons): the
    ImageNet head alone costs seconds to build and run on a CPU."""
    head = vgg.classifier
    vgg.classifier = nn.Sequential(layer.Linear(head[0].in_features, 64), head[1], head[2], layer.Linear(64, 64),
                                   head[4], head[5], layer.Linear(64, 10))
    return vgg


def _spikformer() -> nn.Module:
    return zoo("spikformer").Spikformer(T=T, in_channels=3, img_size_h=16, img_size_w=16, patch_size=4,
                                        num_classes=10, embed_dims=32, num_heads=2, mlp_ratio=2, depths=1)


def _spike_driven_transformer() -> nn.Module:
    return zoo("spike_driven_transformer").SpikeDrivenTransformer(T=T, in_channels=3, num_classes=10, embed_dims=32,
                                                                  num_heads=2, depths=1, mlp_ratio=2)


# name -> (constructor, one image's shape); full-width zoo constructors, small images. The transformers take
# (B, C, H, W) and repeat it T times themselves (REPEATS); the others take (T, B, C, H, W).
REPEATS = {"spikformer", "spike_driven_transformer"}
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "conv-if-maxpool-conv": (_issue_example, (1, 28, 28)),
    "parametric_lif_net.FashionMNISTNet": (
        lambda: zoo("parametric_lif_net").FashionMNISTNet(channels=8, spiking_neuron=neuron.IFNode), (1, 28, 28)),
    "spiking_resnet18": (
        lambda: zoo("spiking_resnet").spiking_resnet18(spiking_neuron=neuron.IFNode, num_classes=10), (3, 16, 16)),
    "sew_resnet18 ADD": (
        lambda: zoo("sew_resnet").sew_resnet18(spiking_neuron=neuron.IFNode, cnf="ADD", num_classes=10), (3, 16, 16)),
    "sew_resnet18 IAND": (
        lambda: zoo("sew_resnet").sew_resnet18(spiking_neuron=neuron.IFNode, cnf="IAND", num_classes=10),
        (3, 16, 16)),
    "spiking_vgg11_bn": (lambda: _narrow_head(zoo("spiking_vgg").spiking_vgg11_bn(spiking_neuron=neuron.IFNode)),
                         (3, 32, 32)),
    "spikformer": (_spikformer, (3, 16, 16)),
    "spike_driven_transformer": (_spike_driven_transformer, (3, 32, 32)),
}


def calibrated(build: Callable[[], nn.Module], image: tuple[int, ...], step_mode: str = "m",
               seed: int = 0, repeats: bool = False) -> tuple[nn.Module, torch.Tensor]:
    """The model with random weights, multi-step, its BatchNorm statistics those of the input; and the input
    (T, 1, *image), or (1, *image) for a model that ``repeats`` it T times, uniform in [0, 2)."""
    torch.manual_seed(seed)
    net = build()
    functional.set_step_mode(net, step_mode)
    x = 2 * torch.rand(1, *image) if repeats else 2 * torch.rand(T, 1, *image)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # the running statistics are those of the calibration batch
    net.train()
    with torch.no_grad():
        net(x)
    functional.reset_net(net)
    net.eval()
    return net, x


@pytest.fixture(scope="module", params=list(MODELS))
def counted(request) -> tuple[str, Profile, tuple[int, int], int]:
    """(name, sdit's strict profile with the value check, (MACs, ACs) by value, spikingjelly's SynOpCounter
    total), the last two from one forward."""
    from spikingjelly.activation_based.op_counter import DispatchCounterMode, SynOpCounter

    net, x = calibrated(*MODELS[request.param], repeats=request.param in REPEATS)
    profile = profiling.profile(net, x, strict=True, spike_detection="verify")
    synop = SynOpCounter()
    by_value = value_count(net, x, also=DispatchCounterMode([synop]))
    return request.param, profile, by_value, synop.get_total()


def test_strict_counts_equal_the_count_by_value(counted) -> None:
    name, profile, (macs, acs), _ = counted
    assert profile.batch_size == 1 and profile.time_steps == T
    assert (profile.per_image["macs"], profile.per_image["acs"]) == (macs, acs), name
    assert acs > 0 and profile.per_image["spikes"] > 0
    assert not profile.unsupported_ops


def test_strict_acs_equal_spikingjelly_synop_counter(counted) -> None:
    name, profile, _, synop = counted
    assert profile.per_image["acs"] == synop, name


def test_the_issue_example_counts_the_last_conv_as_acs() -> None:
    net, x = calibrated(*MODELS["conv-if-maxpool-conv"])
    profile = profiling.profile(net, x, strict=True)
    last = profile.layer("3")
    assert last.macs == 0 and last.acs > 0 and last.dense_macs == T * 8 * 8 * 9 * 14 * 14
    # its ACs by hand: every spike after the pool reaches 8 output channels x the 3 x 3 taps inside the map
    with torch.no_grad():
        functional.reset_net(net)
        pooled = net[2](net[1](net[0](x)))  # (T, 1, 8, 14, 14)
        functional.reset_net(net)
    # the outputs each input position reaches
    taps = nn.functional.conv2d(torch.ones(1, 1, 14, 14), torch.ones(1, 1, 3, 3), padding=1)
    assert last.acs == int((pooled.ne(0).sum(dim=(0, 1, 2)) * taps[0, 0]).sum()) * 8


def _neurobench_ops(net: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """NeuroBench's (effective MACs, ACs) of one forward: its per-layer ``single_layer_MACs`` on the input of
    every layer type it supports (Linear, Conv), what its SynapticOperations metric sums."""
    from neurobench.blocks.layer import STATELESS_LAYERS
    from neurobench.metrics.utils.layers import single_layer_MACs

    totals = {"mac": 0, "ac": 0}
    busy = [False]  # NeuroBench runs a copy of the layer, hooks included: count the outer call only

    def hook(layer_, inputs, _out) -> None:
        if busy[0]:
            return
        busy[0] = True
        try:
            ops, spiking = single_layer_MACs(inputs[0], layer_)
        finally:
            busy[0] = False
        totals["ac" if spiking else "mac"] += int(ops)

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, STATELESS_LAYERS)]
    try:
        functional.reset_net(net)
        with torch.no_grad():
            net(x)
        functional.reset_net(net)
    finally:
        for h in handles:
            h.remove()
    return totals["mac"], totals["ac"]


@pytest.mark.parametrize("name", ["conv-if-maxpool-conv", "parametric_lif_net.FashionMNISTNet", "spikformer"])
def test_strict_acs_equal_neurobench_but_for_functional_matmuls(name: str) -> None:
    """NeuroBench counts a spiking layer's ACs as we do (non-zero inputs x non-zero weights, every weight non-zero
    here), for Linear and Conv modules only: Spikformer's attention products (q k^T, attn v), functional
    matmuls inside ``blocks.0.attn``, are ours alone."""
    pytest.importorskip("neurobench")
    net, x = calibrated(*MODELS[name], repeats=name in REPEATS)
    profile = profiling.profile(net, x, strict=True)
    _, acs = _neurobench_ops(net, x)
    functional_matmuls = profile.layer("blocks.0.attn").acs if name == "spikformer" else 0
    assert profile.per_image["acs"] - functional_matmuls == acs > 0
    assert name != "spikformer" or functional_matmuls > 0
