"""Conventions defined by the spike graph: one net run multi-step, single-step in a user's time loop, or wrapped
in nn.Sequential gives one energy under every convention; spikformer is the published formula, by hand."""

from __future__ import annotations

import pytest
import torch
from spikingjelly.activation_based import functional, neuron
from torch import nn

import profiling
from profiling.conventions import COUNTING_CONVENTIONS, split_steps
from profiling.energy import COST_PRESETS, EnergyCosts, estimate
from tests.profiling.test_peer_suite import MODELS, calibrated


class _StepLoop(nn.Module):
    """A user's time loop over a single-step net: net(x[t]) for each t."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.net(x[t]) for t in range(x.shape[0])])


@pytest.mark.parametrize("name", ["parametric_lif_net.FashionMNISTNet", "spiking_resnet18", "sew_resnet18 ADD"])
def test_every_convention_is_one_energy_whatever_the_step_mode_or_nesting(name: str) -> None:
    net, x = calibrated(*MODELS[name])
    runs = [profiling.profile(net, x), profiling.profile(nn.Sequential(net), x)]
    functional.set_step_mode(net, "s")
    runs.append(profiling.profile(_StepLoop(net), x, time_axis=0))
    keys = ("macs", "acs", "dense_macs", "spikes", "neuron_updates")
    assert len({tuple(p.per_image[k] for k in keys) for p in runs}) == 1
    assert runs[0].per_image["acs"] > 0 and all(p.time_steps == 2 and p.batch_size == 1 for p in runs)
    fp32 = COST_PRESETS["45nm-fp32"]
    for convention in COUNTING_CONVENTIONS:
        energies = [estimate(p, fp32, convention).total_j for p in runs]
        assert energies[1] == energies[0] and energies[2] == pytest.approx(energies[0], rel=1e-12), convention
    # the spike graph, not the step order: the first conv reads the image at every step, no neuron upstream
    assert all(r.upstream_neuron is None for p in runs for r in p.layers if r.name.endswith("conv1")
               and "layer" not in r.name)
    if name == "spiking_resnet18":  # the blocks of the net, wherever it sits
        assert runs[0].layer("layer1.0.conv1").block == "layer1"
        assert runs[1].layer("0.layer1.0.conv1").block == "0.layer1"
        assert runs[2].layer("net.layer1.0.conv1").block == "net.layer1"
        paper, block = (estimate(runs[0], fp32, c).total_j * 1e6 for c in ("paper", "block"))
        assert (round(paper, 2), round(block, 2)) == (16.00, 16.36)  # uJ per image, measured 2026-12-07


T, D_IN, D, D_OUT = 3, 5, 8, 2


class _Residual(nn.Module):
    """Spikformer's pattern: a residual stream of summed spike trains (counts) feeding the next layers."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(D_IN, D, bias=False)
        self.lif0 = neuron.IFNode(step_mode="m")
        self.fc1 = nn.Linear(D, D, bias=False)
        self.lif1 = neuron.IFNode(step_mode="m")
        self.fc2 = nn.Linear(D, D, bias=False)
        self.lif2 = neuron.IFNode(step_mode="m")
        self.head = nn.Linear(D, D_OUT, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D_IN)
        s = self.lif0(self.enc(x).unsqueeze(0).repeat(T, 1, 1))  # (T, B, D) spikes
        s = s + self.lif1(self.fc1(s))  # counts 0..2
        s = s + self.lif2(self.fc2(s))  # counts 0..3
        return self.head(s.mean(0))  # a mean of counts: its non-zeros are its input's firing rate


def test_spikformer_is_the_published_formula_by_hand() -> None:
    """Zhou et al. 2023: E = E_MAC x FLOPs(first layer) + E_AC x sum over the other layers of fr x T x FLOPs,
    fr the firing rate (non-zero share) of each layer's actual input, read here from the tensors themselves."""
    torch.manual_seed(1)
    model = _Residual()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(2.0)
    x = torch.randn(2, D_IN)
    inputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, n=n: inputs.__setitem__(n, a[0].detach()))
             for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        model(x)
    functional.reset_net(model)
    for h in hooks:
        h.remove()
    per_image = 1 / x.shape[0]
    sops = {}
    for name in ("fc1", "fc2", "head"):
        x_in, layer = inputs[name], model.get_submodule(name)
        fr = float(x_in.ne(0).sum()) / x_in.numel()  # over T (and the batch): fr x T per sample
        flops = x_in.numel() * layer.out_features  # MACs of every step and sample: T x FLOPs(l) x B
        sops[name] = fr * flops * per_image
    assert 0 < sops["fc2"] and inputs["fc2"].max() == 2  # fc2 reads a residual of summed spike trains
    enc_macs = x.shape[0] * D_IN * D * per_image  # the encoder runs once, before the repeat
    costs = EnergyCosts("hand", 4.6, 0.9, "Zhou et al. 2023 (Horowitz 2014 45 nm)")
    p = profiling.profile(model, x)
    (split,) = split_steps(p, "spikformer")
    assert split["enc"].macs == enc_macs and split["enc"].acs == 0
    for name, value in sops.items():
        assert split[name].acs == pytest.approx(value, rel=1e-12) and split[name].macs == 0, name
    hand = (4.6 * enc_macs + 0.9 * sum(sops.values())) * 1e-12
    assert estimate(p, costs, "spikformer").total_j == pytest.approx(hand, rel=1e-12)
    # not the rate of the neuron upstream: the residual's non-zero share is higher than lif1's firing rate
    rate_lif1 = p.layer("lif1").firing_rate
    assert split["fc2"].acs > rate_lif1 * p.layer("fc2").dense_macs
