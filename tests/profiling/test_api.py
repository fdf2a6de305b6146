"""The public API, as a notebook user meets it: models written here (not from sdit.models), profiled with
``profiling.profile(model, x)``; exact ACs, MACs and spikes against closed forms computed from the spikes."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from spikingjelly.activation_based import neuron
from torch import Tensor, nn

import profiling
import sdit
from profiling.counter import UnknownNeuronError
from profiling.energy import COST_PRESETS, PJ, energy_frame
from profiling.records import COLUMNS, LayerRecord, LayerStepRecord, Profile
from sdit.workload import Workload

ROOT = Path(__file__).resolve().parents[2]


def _capture(model: nn.Module) -> dict[str, list[Tensor]]:
    """Outputs of every spiking neuron of ``model``, by module name, in call order."""
    seen: dict[str, list[Tensor]] = {}
    for name, m in model.named_modules():
        if isinstance(m, neuron.BaseNode):
            m.register_forward_hook(lambda _m, _a, out, name=name: seen.setdefault(name, []).append(out.detach()))
    return seen


def _nnz(spikes: list[Tensor]) -> int:
    return sum(int(torch.count_nonzero(s)) for s in spikes)


# ---- a Spikformer-style block, multi-step: input (T, B, N, D) ---------------------------------------


class SpikingSelfAttention(nn.Module):
    """Spikformer's spiking self-attention (Zhou et al. 2023) in spikingjelly multi-step mode:
    LIF -> q, k, v Linear -> LIF -> (q k^T) v, no softmax -> LIF -> proj Linear."""

    def __init__(self, dim: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.in_lif = neuron.LIFNode(step_mode="m")
        self.q, self.k, self.v = (nn.Linear(dim, dim, bias=False) for _ in range(3))
        self.q_lif, self.k_lif, self.v_lif = (neuron.LIFNode(step_mode="m") for _ in range(3))
        self.attn_lif = neuron.LIFNode(step_mode="m", v_threshold=0.5)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, x: Tensor) -> Tensor:
        t, b, n, d = x.shape
        return x.view(t, b, n, self.heads, d // self.heads).transpose(2, 3)  # (T, B, H, N, D/H)

    def forward(self, x: Tensor) -> Tensor:  # (T, B, N, D)
        s = self.in_lif(x)
        q = self._heads(self.q_lif(self.q(s)))
        k = self._heads(self.k_lif(self.k(s)))
        v = self._heads(self.v_lif(self.v(s)))
        attn = q @ k.transpose(-2, -1)  # (T, B, H, N, N): spike x spike
        out = (attn @ v) * 0.125  # (T, B, H, N, D/H)
        t, b, h, n, dh = out.shape
        out = out.transpose(2, 3).reshape(t, b, n, h * dh)  # (T, B, N, D)
        return self.proj(self.attn_lif(out))


def test_spikformer_block_counts_equal_closed_form() -> None:
    torch.manual_seed(0)
    T, B, N, D, H = 3, 2, 5, 8, 2
    model = SpikingSelfAttention(D, H)
    for lin in (model.q, model.k, model.v):
        nn.init.uniform_(lin.weight, 0.0, 1.0)  # positive weights so the inner neurons fire
    spikes = _capture(model)
    x = 3 * torch.rand(T, B, N, D)
    profile = profiling.profile(model, x)

    assert profile.batch_size == B and profile.time_steps == T and profile.kind == "snn"
    s = spikes["in_lif"][0]
    q, k, v = (model._heads(spikes[n][0]) for n in ("q_lif", "k_lif", "v_lif"))
    assert int(torch.count_nonzero(q)) and int(torch.count_nonzero(k)) and int(torch.count_nonzero(v))
    coincidences = int(((q != 0).double() @ (k != 0).double().transpose(-2, -1)).sum())
    expected_acs = {  # whole batch: nnz(spike input) x fan-out
        "q": _nnz([s]) * D, "k": _nnz([s]) * D, "v": _nnz([s]) * D,
        "(model)": coincidences + _nnz(spikes["v_lif"]) * N,  # q k^T, then (q k^T) v: nnz(v) x N rows
        "proj": _nnz(spikes["attn_lif"]) * D,
    }
    for name, acs in expected_acs.items():
        assert profile.layer(name).acs == acs / B, name
    assert profile.per_image["macs"] == 0  # every synaptic op reads spikes
    dense = {"q": T * B * N * D * D, "proj": T * B * N * D * D, "(model)": 2 * T * B * H * N * N * (D // H)}
    for name, macs in dense.items():
        assert profile.layer(name).dense_macs == macs // B, name
    for name in ("in_lif", "q_lif", "k_lif", "v_lif", "attn_lif"):
        layer = profile.layer(name)
        assert layer.spikes == _nnz(spikes[name]) / B and layer.neuron_updates == T * N * D
        assert layer.neurons == N * D and len(layer.spikes_per_step) == T
        assert layer.firing_rate == layer.spikes / layer.neuron_updates
    assert profile.layer("proj").adds == T * N * D  # the bias
    assert profile.layer("(model)").muls == T * N * D  # the 0.125 scale


# ---- a spiking CNN, single-step neurons called T times --------------------------------------------------


class SpikingCNN(nn.Module):
    """Conv (real input, the encoder) -> BN -> LIF -> Conv -> BN -> IF -> Linear, T single-step time steps."""

    def __init__(self, time_steps: int = 3, size: int = 6) -> None:
        super().__init__()
        self.time_steps = time_steps
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.lif1 = neuron.LIFNode()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.lif2 = neuron.IFNode(v_threshold=0.5)
        self.fc = nn.Linear(6 * size * size, 10)

    def forward(self, x: Tensor) -> Tensor:  # (B, 1, S, S)
        out = torch.zeros(x.shape[0], 10)
        for _ in range(self.time_steps):
            s1 = self.lif1(self.bn1(self.conv1(x)))  # (B, 4, S, S) spikes
            s2 = self.lif2(self.bn2(self.conv2(s1)))  # (B, 6, S, S) spikes
            out = out + self.fc(s2.flatten(1))
        return out / self.time_steps


def _conv3x3_acs(spikes: Tensor, out_channels: int) -> int:
    """ACs of a 3x3, stride-1, padding-1 conv reading ``spikes`` (B, C, H, W): a spike at row i, column j
    reaches out_channels x (3 - borders at i) x (3 - borders at j) outputs."""
    _, _, h, w = spikes.shape
    rows = torch.tensor([3 - (i == 0) - (i == h - 1) for i in range(h)])
    cols = torch.tensor([3 - (j == 0) - (j == w - 1) for j in range(w)])
    reach = rows[:, None] * cols[None, :]  # (H, W)
    return int(((spikes != 0).long() * reach).sum()) * out_channels


def test_spiking_cnn_counts_equal_closed_form() -> None:
    torch.manual_seed(1)
    T, B, S = 3, 4, 6
    model = SpikingCNN(T, S)
    with torch.no_grad():
        model.bn1.running_var.fill_(0.25)  # eval-mode BN that amplifies: the LIF fires
    spikes = _capture(model)
    profile = profiling.profile(model, torch.randn(B, 1, S, S))

    assert profile.batch_size == B and profile.time_steps == T
    conv1 = profile.layer("conv1")
    assert conv1.macs == conv1.dense_macs == T * 4 * S * S * 1 * 9 and conv1.acs == 0  # per image
    assert profile.layer("bn1").norm == T * 4 * S * S
    lif1, lif2 = profile.layer("lif1"), profile.layer("lif2")
    assert lif1.spikes == _nnz(spikes["lif1"]) / B and lif1.neurons == 4 * S * S
    assert lif1.neuron_updates == T * 4 * S * S
    assert lif1.spikes_per_step == [_nnz([s]) / B for s in spikes["lif1"]]  # one entry per time step
    assert 0 < _nnz(spikes["lif1"]) and 0 < _nnz(spikes["lif2"])
    conv2 = profile.layer("conv2")
    assert conv2.acs == sum(_conv3x3_acs(s, 6) for s in spikes["lif1"]) / B and conv2.macs == 0
    assert conv2.dense_macs == T * 6 * S * S * 4 * 9
    fc = profile.layer("fc")
    assert fc.acs == _nnz(spikes["lif2"]) * 10 / B and fc.macs == 0 and fc.adds == T * 10
    assert lif2.kind == "IFNode" and lif2.neuron_updates == T * 6 * S * S
    assert profile.per_image["macs"] == conv1.macs
    assert profile.per_image["acs"] == conv2.acs + fc.acs


def test_spiking_cnn_counts_do_not_depend_on_reuse() -> None:
    torch.manual_seed(1)
    model = SpikingCNN()
    x = torch.randn(2, 1, 6, 6)
    assert profiling.profile(model, x).to_dict() == profiling.profile(model, x, reuse=False).to_dict()


# ---- a plain ANN ---------------------------------------------------------------------------------------------


def test_plain_ann_macs_equal_closed_form_and_frames_have_documented_columns() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 7 * 7, 16),
                          nn.GELU(), nn.Linear(16, 4))
    profile = profiling.profile(model, torch.randn(5, 3, 16, 16))
    expected = {"0": 7 * 7 * 8 * 3 * 9, "3": 8 * 7 * 7 * 16, "5": 16 * 4}
    assert {r.name: r.macs for r in profile.layers if r.macs} == expected
    assert profile.per_image["macs"] == sum(expected.values()) and profile.per_image["acs"] == 0
    assert profile.kind == "ann" and profile.time_steps == 0 and not profile.is_spiking
    assert profile.layer("1").other == 8 * 7 * 7 and profile.layer("4").exp == 16  # ReLU, GELU
    assert profile.workload == Workload.forward(batch_size=5) and profile.unsupported_ops == []

    layers = profile.layers_frame()
    per_t = ("spikes_per_step",)  # in Profile.spikes_per_step_frame(), long format (docs/api.md)
    assert layers.index.name == "layer"
    assert list(layers.columns) == [f.name for f in fields(LayerRecord)[1:] if f.name not in per_t]
    assert layers.loc["3", "macs"] == expected["3"]
    assert list(profile.steps_frame().columns) == ["t", *COLUMNS]
    long = [f.name for f in fields(LayerStepRecord) if f.name not in ("upstream", "step", "layer", *per_t)]
    assert list(profile.layer_steps_frame().columns) == long

    costs = COST_PRESETS["45nm-fp32"]
    energy = profiling.estimate(profile, costs="45nm-fp32", convention="strict")
    assert energy.convention == "strict" and energy.per_image["mac_j"] == costs.e_mac_pj * sum(expected.values()) * PJ
    assert energy.per_image["ac_j"] == 0.0
    frame = energy_frame(profile, costs)
    assert frame.loc["3", "mac_j"] == costs.e_mac_pj * expected["3"] * PJ


# ---- the rest of the contract --------------------------------------------------------------------------------


def test_unknown_neuron_types_raise_and_can_be_declared() -> None:
    # SimpleLIFNode is no BaseNode: every spikingjelly neuron family is recognised, not only BaseNode's
    model = nn.Sequential(nn.Linear(4, 4), neuron.SimpleLIFNode(2.0, False), nn.Linear(4, 2))
    with pytest.raises(UnknownNeuronError, match="SimpleLIFNode"):
        profiling.profile(model, torch.ones(2, 4))
    profile = profiling.profile(model, 3 * torch.ones(2, 4), neuron_types=(neuron.SimpleLIFNode,))
    assert profile.layer("1").neuron_updates == 4 and profile.layer("2").dense_macs == 8
    spikes = profile.layer("1").spikes
    assert spikes > 0 and profile.layer("2").acs == spikes * 2 and profile.layer("2").macs == 0


class _Sorter(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.sort(x, dim=-1).values * 2


def test_ops_without_a_rule_are_listed() -> None:
    profile = profiling.profile(nn.Sequential(nn.Linear(4, 4), _Sorter()), torch.ones(3, 4))
    listed = {u["op"]: u for u in profile.unsupported_ops}
    assert "aten.sort.default" in listed and listed["aten.sort.default"]["layers"] == ["1"]
    assert profile.layer("1").muls == 4


def test_presets_and_project_models_take_a_workload() -> None:
    from profiling.workloads import profile_forward
    from sdit.models import build_model

    counted = profile_forward(build_model("dit-tiny"), name="dit-tiny")
    assert profiling.profile("dit-tiny").to_dict() == counted.to_dict()
    run = profiling.profile(build_model("sdit-tiny"), workload=Workload.ddim(2, batch_size=2), name="tiny")
    assert run.num_model_calls == 2 and run.model == "tiny" and run.workload.batch_size == 2


def test_bad_calls_say_what_to_do() -> None:
    with pytest.raises(TypeError, match="example input"):
        profiling.profile(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="workload"):
        profiling.profile(nn.Linear(2, 2), torch.ones(1, 2), workload=Workload.forward())
    with pytest.raises(TypeError, match="nn.Module"):
        profiling.profile(42)
    with pytest.raises(TypeError, match="workload="):
        profiling.profile("dit-tiny", torch.ones(1))


def test_profiling_exports_the_api_and_keeps_its_submodule_imports() -> None:
    from profiling import estimate, profile
    from profiling.profile import build_profile

    assert profile is profiling.profile and estimate is profiling.estimate and callable(build_profile)
    with pytest.raises(AttributeError, match="profiling.profile"):
        sdit.profile  # noqa: B018  (sdit is the model floor; the profiler lives above it)
    assert isinstance(profiling.profile(nn.Linear(2, 3), torch.ones(1, 2)), Profile)


def _run_warnings_as_errors(code: str, timeout: int = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -W error -c code`` in a fresh interpreter on this checkout, output captured."""
    return subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=ROOT, env={"PYTHONPATH": str(ROOT), **env},
                          capture_output=True, text=True, timeout=timeout)


def test_library_use_prints_nothing_and_import_sdit_stays_light() -> None:
    code = (
        "import sys, torch; import profiling; assert 'profiling.counter' not in sys.modules; "
        "from spikingjelly.activation_based import neuron; "
        "m = torch.nn.Sequential(torch.nn.Linear(4, 4), neuron.LIFNode(), torch.nn.Linear(4, 2)); "
        "p = profiling.profile(m, torch.randn(2, 4)); e = profiling.estimate(p, 'loihi', 'spikformer'); "
        "print(p.layer('2').dense_macs)"
    )
    done = _run_warnings_as_errors(code, SDIT_WKV_EXT="0")
    assert done.returncode == 0 and done.stderr == "" and done.stdout == "8\n", done.stderr
    light = _run_warnings_as_errors("import sys, sdit; print('torch' in sys.modules)", timeout=60)
    assert light.stdout == "False\n" and light.stderr == ""


def test_our_models_print_nothing_plain_or_profiled() -> None:
    """A plain forward of our models (their fused paths ask whether anything counts) and a profiled one
    log and warn nothing: torch's ``is_fx_tracing`` logs a warning, so the check must not use it."""
    code = (
        "import torch, profiling; from sdit.models import build_model; from sdit.config import get_preset; "
        "m = build_model(get_preset('sdit-tiny')).eval(); x = torch.randn(2, 1, 28, 28); t = torch.tensor([3, 7]); "
        "m(x, t); p = profiling.profile(m, (x, t)); m(x, t); print(p.per_image['macs'] > 0)"
    )
    done = _run_warnings_as_errors(code, SDIT_WKV_EXT="0")
    assert done.returncode == 0 and done.stderr == "" and done.stdout == "True\n", done.stderr


# ---- neurons of other frameworks, one declared protocol -------------------------------------------------------


class _LoopNet(nn.Module):
    """A user's time loop over x[t] (time-first input (T, B, 8)): fc1 -> neuron -> fc2 -> neuron; ``make`` builds a
    neuron, ``call(neuron, current, state) -> (spikes, state)`` runs one step of it."""

    def __init__(self, make, call) -> None:
        super().__init__()
        self.fc1, self.n1, self.fc2, self.n2 = nn.Linear(8, 16), make(), nn.Linear(16, 4), make()
        self.call = call

    def forward(self, x: Tensor) -> Tensor:
        s1 = s2 = None
        out = []
        for t in range(x.shape[0]):
            spk1, s1 = self.call(self.n1, self.fc1(x[t]), s1)
            spk2, s2 = self.call(self.n2, self.fc2(spk1), s2)
            out.append(spk2)
        return torch.stack(out)


def _by_value(net: _LoopNet, x: Tensor) -> tuple[int, int]:
    """(spikes of n1, ACs of fc2 = nnz(n1's spikes) x 4), from n1's outputs."""
    seen: list[Tensor] = []
    hook = net.n1.register_forward_hook(
        lambda _m, _a, out: seen.append((out[0] if isinstance(out, tuple) else out).detach()))
    with torch.no_grad():
        net(x)
    hook.remove()
    nnz = sum(int(s.count_nonzero()) for s in seen)
    return nnz, nnz * 4


def _snntorch_net() -> _LoopNet:
    snn = pytest.importorskip("snntorch")
    return _LoopNet(lambda: snn.Leaky(beta=0.9),
                    lambda n, cur, mem: n(cur, n.init_leaky() if mem is None else mem))


def _norse_net() -> _LoopNet:
    norse = pytest.importorskip("norse.torch")
    return _LoopNet(lambda: norse.LIFCell(), lambda n, cur, state: n(cur, state))


@pytest.mark.parametrize("build", [_snntorch_net, _norse_net], ids=["snntorch", "norse"])
def test_snntorch_and_norse_neurons_count_exactly_without_declarations(build, capsys) -> None:
    torch.manual_seed(0)
    net, x = build(), 3 * torch.rand(4, 2, 8)  # (T, B, features)
    spikes, acs = _by_value(net, x)
    profile = profiling.profile(net, x, strict=True, spike_detection="verify")
    assert "batch size 2: axis 1" in capsys.readouterr().err  # time first: the assumption is said
    assert profile.batch_size == 2 and profile.kind == "snn" and profile.time_steps == 4
    assert profile.layer("n1").spikes * 2 == spikes > 0 and profile.layer("n1").neuron_updates == 4 * 16
    assert profile.layer("fc2").acs * 2 == acs and profile.layer("fc2").macs == 0
    stated = profiling.profile(net, x, time_axis=0)
    assert capsys.readouterr().err == "" and stated.to_dict() == profile.to_dict()


def test_an_snntorch_recurrent_neuron_is_refused_with_the_fix() -> None:
    snn = pytest.importorskip("snntorch")
    net = _LoopNet(lambda: snn.RLeaky(beta=0.9, linear_features=16), lambda n, cur, s: (n(cur)[0], None))
    with pytest.raises(UnknownNeuronError, match=r"n1: snnTorch RLeaky cannot be counted: its recurrent weights"):
        profiling.profile(net, torch.rand(4, 2, 8))


def test_a_norse_recurrent_cell_is_refused_with_the_fix() -> None:
    norse = pytest.importorskip("norse.torch")
    net = _LoopNet(lambda: norse.LIFRecurrentCell(16, 16), lambda n, cur, state: n(cur, state))
    net.n2 = norse.LIFCell()
    with pytest.raises(UnknownNeuronError, match=r"n1: Norse LIFRecurrentCell cannot be counted: its input and "
                       r"recurrent weights .* use the non-recurrent cell \(LIFCell, LIF\)"):
        profiling.profile(net, torch.rand(4, 2, 8))


class HandLIF(nn.Module):
    """A hand-written LIF, single-step: membrane v, threshold 1, hard reset."""

    def __init__(self) -> None:
        super().__init__()
        self.v: Tensor | None = None

    def forward(self, current: Tensor) -> Tensor:
        self.v = current if self.v is None else 0.5 * self.v + current
        spikes = (self.v >= 1.0).to(current.dtype)
        self.v = self.v * (1 - spikes)
        return spikes


def test_a_hand_written_neuron_is_refused_until_declared(capsys) -> None:
    from profiling.neurons import NeuronSpec

    torch.manual_seed(0)
    net, x = _LoopNet(HandLIF, lambda n, cur, _s: (n(cur), None)), 3 * torch.rand(4, 2, 8)
    with pytest.raises(UnknownNeuronError, match=r"n1: HandLIF emits binary values .* neuron_types=\(HandLIF,\)"):
        profiling.profile(net, x)
    for n in (net.n1, net.n2):
        n.v = None
    spikes, acs = _by_value(net, x)
    for n in (net.n1, net.n2):
        n.v = None
    profile = profiling.profile(net, x, neuron_types=(HandLIF,), time_axis=0, spike_detection="verify")
    assert profile.layer("n1").spikes * 2 == spikes > 0 and profile.layer("fc2").acs * 2 == acs
    assert profile.layer("fc2").macs == 0
    declared = {HandLIF: NeuronSpec(time_axis=None, updates_per_element=3)}
    for n in (net.n1, net.n2):
        n.v = None
    costly = profiling.profile(net, x, neuron_types=declared, time_axis=0)
    assert costly.layer("n1").neuron_updates == 3 * profile.layer("n1").neuron_updates


def test_an_analog_output_neuron_is_not_spiking() -> None:
    lif = neuron.LIAFNode(act=nn.ReLU(), threshold_related=False)
    model = nn.Sequential(nn.Linear(4, 4), lif, nn.Linear(4, 2))
    profile = profiling.profile(model, 3 * torch.rand(2, 4))
    assert profile.kind == "ann" and profile.per_image["spikes"] == 0 and profile.per_image["acs"] == 0
    assert profile.layer("2").macs == 8


def test_a_declared_neuron_without_its_spike_output_is_refused() -> None:
    from profiling.neurons import NeuronSpec

    class Pair(nn.Module):
        def forward(self, x):
            return ((x > 0).float(), x)

    class Wrap(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.n, self.fc = Pair(), nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.n(x)[0])

    with pytest.raises(UnknownNeuronError, match="no spike tensor at output index 2"):
        profiling.profile(Wrap(), torch.randn(2, 4), neuron_types={Pair: NeuronSpec(spike_output=2)})
    profile = profiling.profile(Wrap(), torch.randn(2, 4), neuron_types={Pair: NeuronSpec(spike_output=0)})
    assert profile.layer("fc").macs == 0 and profile.layer("n").neuron_updates == 4


# ---- axes stated, not guessed ------------------------------------------------------------------------------


class _Repeats(nn.Module):
    """Takes (B, C, H, W) and repeats it T = 4 times inside, multi-step (as spikformer does)."""

    def __init__(self) -> None:
        super().__init__()
        from spikingjelly.activation_based import functional, layer

        self.conv, self.sn = layer.Conv2d(3, 4, 3, padding=1), neuron.IFNode()
        functional.set_step_mode(self, "m")

    def forward(self, x: Tensor) -> Tensor:
        return self.sn(self.conv(x.unsqueeze(0).repeat(4, 1, 1, 1, 1)))


def test_a_model_that_repeats_its_input_reads_the_batch_from_axis_0(capsys) -> None:
    model, x = _Repeats(), torch.rand(2, 3, 8, 8)
    profile = profiling.profile(model, x)
    assert profile.batch_size == 2 and capsys.readouterr().err == ""
    assert profiling.profile(model, x, time_axis=None).to_dict() == profile.to_dict()
    assert profile.layer("conv").dense_macs == 4 * 4 * 64 * 27  # per image
    with pytest.raises(ValueError, match="time_axis=7"):
        profiling.profile(model, x, time_axis=7)


def test_an_ambiguous_batch_is_said(capsys) -> None:
    class Folded(nn.Module):  # neurons see (T, B * 3, ...): no axis of the input shows B
        def __init__(self) -> None:
            super().__init__()
            self.sn = neuron.IFNode(step_mode="m")

        def forward(self, x):
            return self.sn(x.flatten(1, 2))

    profile = profiling.profile(Folded(), torch.rand(4, 2, 3, 5))
    assert profile.batch_size == 2 and "do not show it (pass batch_size= or time_axis=" in capsys.readouterr().err
    assert profiling.profile(Folded(), torch.rand(4, 2, 3, 5), batch_size=2).batch_size == 2
    assert capsys.readouterr().err == ""
