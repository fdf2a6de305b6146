"""sinabs's neurons (IAF, LIF, ALIF, their Squeeze forms) counted through their built-in declarations, with no
``neuron_types=``: spikes, firing rates and strict ACs / MACs against a count by value of the same forward;
a multi-spike layer's output (0, 1, 2 ... spikes per step) is counts of spikes, charged as MACs where it
feeds a synaptic op, its spikes the sum of its counts; time on axis 1, or split from the flattened
batch x time of a Squeeze layer by its ``batch_size`` / ``num_timesteps``.

sinabs 3.1.3 imports matplotlib's ``pylab`` at import time (``sinabs/network.py``, for plotting only);
matplotlib is not in the lock, so a stub module stands in for it during the import."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest
import torch
from torch import Tensor, nn

import profiling
from profiling.counter import UnknownNeuronError
from profiling.neurons import NeuronSpec, NeuronTable
from tests.profiling.value_count import ValueCount

B, T = 2, 4  # images, spiking steps


def _sinabs() -> tuple[ModuleType, ModuleType]:
    """(sinabs.layers, sinabs.activation), imported with a stub ``pylab`` where matplotlib is absent."""
    if importlib.util.find_spec("sinabs") is None:
        pytest.skip("sinabs is not installed (requirements-dev.lock pins sinabs 3.1.3; setup.sh --dev installs it)")
    stub = None
    if "pylab" not in sys.modules and importlib.util.find_spec("pylab") is None:
        stub = sys.modules["pylab"] = ModuleType("pylab")
    try:
        import sinabs.activation
        import sinabs.layers
    finally:
        if stub is not None and sys.modules.get("pylab") is stub:
            del sys.modules["pylab"]
    return sinabs.layers, sinabs.activation


class Net(nn.Module):
    """Linear -> LIF (SingleSpike: 0/1) -> Linear -> IAF (MultiSpike: counts) -> Linear, on (B, T, 6); with
    ``squeeze``, the Squeeze forms on (B x T, 6) (``split``: "batch_size" or "num_timesteps")."""

    def __init__(self, squeeze: bool = False, split: str = "batch_size") -> None:
        super().__init__()
        sl, act = _sinabs()
        flat = {split: B if split == "batch_size" else T} if squeeze else {}
        lif, iaf = (sl.LIFSqueeze, sl.IAFSqueeze) if squeeze else (sl.LIF, sl.IAF)
        torch.manual_seed(0)
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, 8), nn.Linear(8, 5), nn.Linear(5, 3)
        with torch.no_grad():
            self.fc2.weight.abs_().mul_(3.0)  # the IAF gets enough current to fire 2 and more per step
        self.lif = lif(tau_mem=10.0, spike_fn=act.SingleSpike, norm_input=False, **flat)
        self.iaf = iaf(**flat)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc3(self.iaf(self.fc2(self.lif(self.fc1(x)))))


def _reset(net: nn.Module) -> None:
    for m in net.modules():
        if hasattr(m, "reset_states"):
            m.reset_states()


def _by_value(net: Net, x: Tensor) -> tuple[dict[str, Tensor], int, int]:
    """The neurons' outputs as (B, T, n), and the forward's (MACs, ACs) by value, whole batch."""
    seen: dict[str, Tensor] = {}
    hooks = [getattr(net, n).register_forward_hook(lambda _m, _a, out, n=n: seen.__setitem__(n, out.detach()))
             for n in ("lif", "iaf")]
    _reset(net)
    with torch.no_grad(), ValueCount() as count:
        net(x)
    for h in hooks:
        h.remove()
    _reset(net)
    return {n: s.reshape(B, T, -1) for n, s in seen.items()}, count.macs, count.acs


def _input() -> Tensor:
    torch.manual_seed(1)
    return 3 * torch.rand(B, T, 6)


def test_sinabs_layers_count_exactly_without_declarations(capsys) -> None:
    net, x = Net(), _input()
    out, macs, acs = _by_value(net, x)
    lif, iaf = out["lif"], out["iaf"]
    assert set(lif.unique().tolist()) == {0.0, 1.0} and iaf.max() >= 2  # binary, and counts above 1
    profile = profiling.profile(net, x, strict=True, spike_detection="verify")
    assert capsys.readouterr().err == ""  # (B, T, ...): the batch is axis 0, as the neurons confirm
    assert profile.batch_size == B and profile.kind == "snn" and profile.time_steps == T
    n1, n2 = profile.layer("lif"), profile.layer("iaf")
    assert n1.spikes * B == int(lif.sum()) > 0 and n1.neuron_updates == T * 8
    assert n2.spikes * B == int(iaf.sum()) > int(iaf.count_nonzero())  # spikes: the sum of the counts
    assert n2.neuron_updates == T * 5
    assert n1.firing_rate == pytest.approx(float(lif.mean())) and n2.firing_rate == pytest.approx(float(iaf.mean()))
    assert n1.spikes_per_step == [int(lif[:, t].sum()) / B for t in range(T)]
    # fc2 reads the LIF's spikes: ACs; fc3 reads the IAF's counts: MACs, as fc1 reads the input
    assert profile.layer("fc2").acs * B == int(lif.count_nonzero()) * 5 and profile.layer("fc2").macs == 0
    assert profile.layer("fc3").macs == T * 5 * 3 and profile.layer("fc3").acs == 0
    assert profile.layer("fc1").macs == T * 6 * 8
    assert profile.per_image["macs"] * B == macs and profile.per_image["acs"] * B == acs


@pytest.mark.parametrize("split", ["batch_size", "num_timesteps"])
def test_squeeze_layers_split_batch_and_time_as_declared(split, capsys) -> None:
    plain, x = Net(), _input()
    net = Net(squeeze=True, split=split)
    net.load_state_dict(plain.state_dict())
    flat = x.flatten(0, 1)  # (B x T, 6), batch major, as sinabs's Squeeze layers read it
    out, macs, acs = _by_value(net, flat)
    _reset(plain)
    expected = profiling.profile(plain, x, strict=True).to_dict()
    _reset(net)
    profile = profiling.profile(net, flat, strict=True, spike_detection="verify")
    assert capsys.readouterr().err == ""  # axis 0 is the neurons' batch x time: B images, silently
    assert profile.batch_size == B and profile.time_steps == T
    assert profile.per_image["macs"] * B == macs and profile.per_image["acs"] * B == acs
    assert profile.layer("iaf").spikes * B == int(out["iaf"].sum())
    assert profile.layer("lif").spikes_per_step == [int(out["lif"][:, t].sum()) / B for t in range(T)]
    got = profile.to_dict()
    for key in ("per_image", "time_steps", "batch_size"):
        assert got[key] == expected[key], key
    _reset(net)
    assert profiling.profile(net, flat, strict=True, batch_size=B).to_dict()["per_image"] == expected["per_image"]


def test_spike_fn_decides_spikes_or_counts_and_exp_leak_is_analog() -> None:
    sl, act = _sinabs()
    table = NeuronTable()
    binary = [sl.LIF(tau_mem=5.0, spike_fn=act.SingleSpike), sl.IAF(spike_fn=act.MaxSpike(1)),
              sl.ALIF(tau_mem=5.0, tau_adapt=5.0), sl.IAFSqueeze(batch_size=1, spike_fn=act.SingleSpike)]
    counts = [sl.LIF(tau_mem=5.0), sl.IAF(), sl.IAF(spike_fn=act.MaxSpike(3)),
              sl.LIFSqueeze(tau_mem=5.0, num_timesteps=2)]
    for m in binary + counts:
        assert table.is_neuron(m), type(m).__name__
    assert [table.spec_of(m).output_of(m) for m in binary] == ["spikes"] * 4
    assert [table.spec_of(m).output_of(m) for m in counts] == ["counts"] * 4
    assert not table.is_neuron(sl.ExpLeak(tau_mem=5.0))
    assert not table.is_neuron(sl.ExpLeakSqueeze(tau_mem=5.0, batch_size=1))
    assert "sinabs IAFSqueeze" in table.names() and "sinabs ExpLeak" not in table.names()
    # an ALIF (SingleSpike by default) feeding a Linear: ACs; an ExpLeak's membrane: MACs
    model = nn.Sequential(nn.Linear(3, 4), sl.ALIF(tau_mem=5.0, tau_adapt=5.0, norm_input=False), nn.Linear(4, 2))
    torch.manual_seed(0)
    x = 4 * torch.rand(1, T, 3)
    profile = profiling.profile(model, x, strict=True, spike_detection="verify")
    assert profile.layer("2").macs == 0 and profile.layer("1").neuron_updates == T * 4
    leak = profiling.profile(nn.Sequential(nn.Linear(3, 4), sl.ExpLeak(tau_mem=5.0), nn.Linear(4, 2)), x)
    assert leak.kind == "ann" and leak.layer("2").macs == T * 8


@pytest.mark.parametrize("squeeze", [False, True], ids=["plain", "squeeze"])
def test_sinabs_own_synop_counter_agrees_where_it_counts_the_same(squeeze) -> None:
    """sinabs's SNNAnalyzer counts a Linear's synops as the sum of its input's values x fan-out, per image: our
    ACs where the input is 0/1 spikes; where it is a multi-spike layer's counts, one synop per spike (sum of
    the counts x fan-out), where strict counting charges every element as a MAC; on a real-valued input (fc1)
    it sums the real values, where we count MACs. Its firing rates are ours. With Squeeze layers it splits a
    Linear's (B x T, ...) input by the Squeeze layer's batch_size, as we split the neurons' outputs."""
    plain, x = Net(), _input()  # imports sinabs (with the pylab stub where needed)
    import sinabs.synopcounter

    net = Net(squeeze=True) if squeeze else plain
    net.load_state_dict(plain.state_dict())
    x = x.flatten(0, 1) if squeeze else x
    _reset(net)
    with pytest.warns(DeprecationWarning, match="SNNAnalyzer is deprecated"):
        analyzer = sinabs.synopcounter.SNNAnalyzer(net)
    with torch.no_grad():
        net(x)
    stats = analyzer.get_layer_statistics()
    analyzer.reset()
    for h in analyzer.handles:
        h.remove()
    _reset(net)
    profile = profiling.profile(net, x, strict=True)
    synops = {n: float(stats["parameter"][n]["synops"]) for n in ("fc1", "fc2", "fc3")}
    assert synops["fc2"] == pytest.approx(profile.layer("fc2").acs)
    assert synops["fc3"] == pytest.approx(profile.layer("iaf").spikes * 3) and profile.layer("fc3").acs == 0
    assert synops["fc1"] == pytest.approx(float(x.sum()) / B * 8) and profile.layer("fc1").macs == T * 6 * 8
    for n in ("lif", "iaf"):
        assert float(stats["spiking"][n]["firing_rate"]) == pytest.approx(profile.layer(n).firing_rate)


def test_a_recurrent_layer_is_refused_with_the_fix_unless_declared() -> None:
    layers, _ = _sinabs()
    net = nn.Sequential(nn.Linear(6, 5), layers.IAFRecurrent(rec_connect=nn.Linear(5, 5, bias=False)))
    x = torch.rand(B, T, 6)
    with pytest.raises(UnknownNeuronError, match=r"1: sinabs IAFRecurrent cannot be counted: its "
                       r"recurrent connection \(rec_connect\) runs inside the layer; use the non-recurrent layer"):
        profiling.profile(net, x)
    spec = NeuronSpec(time_axis=1, framework="user")
    declared = profiling.profile(net, x, neuron_types={layers.IAFRecurrent: spec})
    assert declared.per_image["neuron_updates"] == 5 * T
