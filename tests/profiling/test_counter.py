"""Exact op counts of the per-layer profiler against closed forms, brute force and other tools."""

from __future__ import annotations

import itertools

import pytest
import torch
from spikingjelly.activation_based import functional, neuron, surrogate
from torch import nn

from profiling.counter import LayerCounter, UnknownNeuronError, UnsupportedOpError
from profiling.records import PER_CALL_COLUMNS, Profile
from profiling.workloads import profile_forward, profile_module, profile_sampling
from sdit.config import get_preset
from sdit.models import build_model
from sdit.workload import Workload


def _macs_by_layer(profile: Profile) -> dict[str, int]:
    return {r.name: r.macs for r in profile.layers if r.macs}


# ---- closed forms for the tiny presets -------------------------------------------------------


def sdit_closed_form(name: str) -> dict[str, int]:
    """Per-image MACs of every synaptic layer of an SDiT preset, derived from the block equations (docs/design.md)."""
    cfg = get_preset(name)
    d, n, t, p, c = cfg.hidden_size, cfg.num_tokens, cfg.time_steps, cfg.patch_size, cfg.in_channels
    m = 2 * n if cfg.reconstruction else n  # tokens inside a block
    h = cfg.ffn_ratio * d
    macs = {
        "patch_embed": cfg.num_patches * d * c * p * p,
        "time_embed.mlp.0": cfg.freq_dim * d,
        "time_embed.mlp.2": d * d,
        "final_linear": n * d * p * p * c,  # the time token is projected, then dropped
        "final_conv": cfg.image_size**2 * c * c * 9,
    }
    blocks = [f"in_blocks.{i}" for i in range(cfg.depth_in)] + [
        f"mid_blocks.{i}" for i in range(cfg.depth_mid)
    ]
    blocks += [f"out_blocks.{i}" for i in range(cfg.depth_out)]
    for block in blocks:
        for lin in ("key", "value", "receptance", "output"):
            macs[f"{block}.time_mixing.{lin}"] = t * m * d * d
        macs[f"{block}.channel_mixing.key"] = t * m * d * h
        macs[f"{block}.channel_mixing.value"] = t * m * h * d
        macs[f"{block}.channel_mixing.receptance"] = t * m * d * d
        if cfg.reconstruction:
            macs[f"{block}.recon_d"] = t * n * d * n  # Eq. 11
            macs[f"{block}.recon_n"] = t * n * n * d  # Eq. 12
        if block.startswith("out_blocks"):
            macs[f"{block}.skip_linear"] = t * n * 2 * d * d  # Eq. 5
    return macs


def dit_closed_form(name: str) -> dict[str, int]:
    cfg = get_preset(name)
    d, p, c, L = cfg.hidden_size, cfg.patch_size, cfg.in_channels, cfg.num_patches
    macs = {
        "patch_embed": L * d * c * p * p,
        "time_embed.mlp.0": cfg.freq_dim * d,
        "time_embed.mlp.2": d * d,
        "final.adaln.1": d * 2 * d,
        "final.linear": L * d * p * p * c,
    }
    for i in range(cfg.depth):
        b = f"blocks.{i}"
        macs[f"{b}.attn.qkv"] = L * d * 3 * d
        macs[f"{b}.attn"] = 2 * L * L * d  # q k^T and attn v over all heads
        macs[f"{b}.attn.proj"] = L * d * d
        macs[f"{b}.mlp.0"] = L * d * cfg.mlp_ratio * d
        macs[f"{b}.mlp.2"] = L * cfg.mlp_ratio * d * d
        macs[f"{b}.adaln.1"] = d * 6 * d
    return macs


@pytest.mark.parametrize("name", ["sdit-tiny", "sdit-tiny-norecon"])
def test_sdit_tiny_macs_match_closed_form(name: str) -> None:
    profile = profile_forward(build_model(name), name=name, batch_size=2)
    expected = sdit_closed_form(name)
    assert _macs_by_layer(profile) == expected
    assert profile.per_image["macs"] == sum(expected.values())
    assert profile.per_image["acs"] == 0  # every synaptic op reads LayerNorm/real inputs
    if name == "sdit-tiny":
        assert profile.per_image["macs"] == 5_860_528


def test_dit_tiny_macs_match_closed_form() -> None:
    profile = profile_forward(build_model("dit-tiny"), name="dit-tiny", batch_size=2)
    expected = dit_closed_form("dit-tiny")
    assert _macs_by_layer(profile) == expected
    assert profile.per_image["macs"] == 499_712
    cfg = get_preset("dit-tiny")
    L = cfg.num_patches
    assert profile.layer("blocks.0.attn").softmax == cfg.num_heads * L * L


def test_sdit_tiny_other_columns() -> None:
    cfg = get_preset("sdit-tiny")
    profile = profile_forward(build_model("sdit-tiny"), name="sdit-tiny", batch_size=3)
    d, n, t = cfg.hidden_size, cfg.num_tokens, cfg.time_steps
    blocks = cfg.depth_in + cfg.depth_mid + cfg.depth_out
    lif = profile.layer("in_blocks.0.attn_lif")
    assert lif.kind == "LIFNode" and lif.neurons == 2 * n * d and lif.neuron_updates == t * 2 * n * d
    assert len(lif.spikes_per_step) == t
    assert profile.per_image["neuron_updates"] == blocks * 2 * t * 2 * n * d
    assert profile.per_image["norm"] == blocks * 2 * t * 2 * n * d + n * d  # ln1, ln2 per block + final
    assert profile.layer("in_blocks.0.time_mixing.wkv").exp == 4 * t * 2 * n * d


def test_per_image_counts_do_not_depend_on_batch_size() -> None:
    torch.manual_seed(0)
    model = _firing_sdit()
    x = torch.randn(1, 1, 28, 28)
    one = profile_forward(model, name="m", images=x)
    three = profile_forward(model, name="m", images=x.expand(3, -1, -1, -1).contiguous())
    # every count but bytes: weights are read once per call, so their bytes amortise over the batch
    per_call = {"bytes", *PER_CALL_COLUMNS}
    assert {k: v for k, v in one.per_image.items() if k not in per_call} == {
        k: v for k, v in three.per_image.items() if k not in per_call
    }
    assert one.per_image["bytes"] > three.per_image["bytes"]
    assert one.per_image["spikes"] > 0
    assert [r.spikes_per_step for r in one.layers] == [r.spikes_per_step for r in three.layers]


def _firing_sdit() -> nn.Module:
    model = build_model("sdit-tiny")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(8.0)
    return model


def test_firing_rate_and_upstream_neuron() -> None:
    model = _firing_sdit()
    profile = profile_forward(model, name="m", batch_size=2, seed=1)
    for lif in (r for r in profile.layers if r.kind == "LIFNode"):
        assert lif.firing_rate == pytest.approx(lif.spikes / lif.neuron_updates)
        assert sum(lif.spikes_per_step) == lif.spikes
    key = profile.layer("in_blocks.0.channel_mixing.key")
    upstream = profile.layer("in_blocks.0.attn_lif")
    assert key.upstream_neuron == "in_blocks.0.attn_lif" and upstream.kind == "LIFNode"
    # the paper convention's charges of these layers: tests/profiling/test_conventions.py


# ---- spikes: brute force and spikingjelly -----------------------------------------------------


class SpikeNet(nn.Module):
    """Real input -> LIF -> Linear on spikes, Conv on spikes, and a spike x spike product."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, 2 * 36)
        self.lif1 = neuron.LIFNode(step_mode="m", surrogate_function=surrogate.ATan())
        self.fc2 = nn.Linear(2 * 36, 5)
        self.conv = nn.Conv2d(2, 3, kernel_size=3, stride=2, padding=1)
        self.lif2 = neuron.LIFNode(step_mode="m", surrogate_function=surrogate.ATan())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (T, B, 12)
        s = self.lif1(self.fc1(x) * 3)  # (T, B, 72) spikes
        a = self.fc2(s)  # ACs
        img = s.reshape(-1, 2, 6, 6)  # (T*B, 2, 6, 6) spikes
        c = self.conv(img)  # ACs
        s2 = self.lif2(c.reshape(x.shape[0], x.shape[1], -1) * 3)  # (T, B, 27)
        co = torch.matmul(s2.transpose(-1, -2), s2)  # spike x spike: coincidences
        functional.reset_net(self)
        return a.sum() + co.sum()


def _brute_conv_acs(x: torch.Tensor, conv: nn.Conv2d) -> int:
    """Loop over nonzero inputs; count (output position, out channel) pairs each one feeds."""
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    h_out = (x.shape[2] + 2 * ph - kh) // sh + 1
    w_out = (x.shape[3] + 2 * pw - kw) // sw + 1
    total = 0
    for _b, _ch, y, xx in torch.nonzero(x).tolist():
        for ky, kx in itertools.product(range(kh), range(kw)):
            oy, ox = y + ph - ky, xx + pw - kx
            if oy % sh or ox % sw:
                continue
            if 0 <= oy // sh < h_out and 0 <= ox // sw < w_out:
                total += conv.out_channels
    return total


def test_acs_equal_brute_force() -> None:
    torch.manual_seed(0)
    net = SpikeNet()
    x = torch.randn(4, 3, 12)
    seen: dict[str, torch.Tensor] = {}
    net.lif1.register_forward_hook(lambda m, i, o: seen.__setitem__("s1", o))
    net.lif2.register_forward_hook(lambda m, i, o: seen.__setitem__("s2", o))
    with LayerCounter(net) as counter:
        with counter.step(index=0):
            net(x)
    ((_, layers),) = counter.finish()[0]
    s1, s2 = seen["s1"], seen["s2"]
    assert 0 < s1.mean() < 1 and 0 < s2.mean() < 1
    assert layers["fc1"]["acs"] == 0 and layers["fc1"]["macs"] == 4 * 3 * 12 * 72
    assert layers["fc2"]["acs"] == int(s1.count_nonzero()) * 5 and layers["fc2"]["macs"] == 0
    assert layers["conv"]["acs"] == _brute_conv_acs(s1.reshape(-1, 2, 6, 6), net.conv)
    coincidences = sum(
        int(s2[t, :, i].ne(0).logical_and(s2[t, :, j].ne(0)).sum())
        for t in range(4)
        for i in range(27)
        for j in range(27)
    )
    assert layers["(model)"]["acs"] == coincidences
    assert layers["lif1"]["spikes"] == int(s1.count_nonzero())
    assert layers["lif1"]["spikes_per_step"] == s1.reshape(4, -1).count_nonzero(dim=1).tolist()


def test_acs_equal_spikingjelly_synop_counter() -> None:
    from spikingjelly.activation_based.op_counter import DispatchCounterMode, SynOpCounter

    torch.manual_seed(0)
    net = SpikeNet()
    x = torch.randn(4, 3, 12)
    synop = SynOpCounter()
    with torch.no_grad(), DispatchCounterMode([synop]):
        net(x)
    with LayerCounter(net) as counter, torch.no_grad(), counter.step(index=0):
        net(x)
    ((_, layers),) = counter.finish()[0]
    ours = sum(rec["acs"] for rec in layers.values())
    assert ours == synop.get_total() > 0


# ---- nothing silent --------------------------------------------------------------------------


class OddOp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumprod(x, dim=-1)


def test_unsupported_ops_are_listed_and_strict_raises() -> None:
    model = nn.Sequential(nn.Linear(4, 4), OddOp())
    with LayerCounter(model) as counter, counter.step(index=0):
        model(torch.randn(2, 4))
    _, unsupported = counter.finish()
    assert [(u.op, u.count, u.layers) for u in unsupported] == [("aten.cumprod.default", 1, ["1"])]
    with pytest.raises(UnsupportedOpError, match="cumprod"):
        with LayerCounter(model, strict=True) as counter, counter.step(index=0):
            model(torch.randn(2, 4))


def test_unknown_neuron_type_is_an_error() -> None:
    model = nn.Sequential(nn.Linear(4, 4), neuron.KLIFNode(step_mode="m"))
    with pytest.raises(UnknownNeuronError, match="KLIFNode"):
        LayerCounter(model)


def test_presets_have_no_unsupported_ops() -> None:
    for name in ("sdit-tiny", "dit-tiny"):
        profile = profile_forward(build_model(name), name=name, strict=True)
        assert profile.unsupported_ops == []


# ---- workloads and serialisation ----------------------------------------------------------------


def test_sampling_run_counts_every_step() -> None:
    model = build_model("dit-tiny")
    run = profile_sampling(model, name="dit-tiny", sample_steps=4, batch_size=2)
    assert [s.t for s in run.steps] == [999, 666, 333, 0]
    assert run.per_image["macs"] == 4 * 499_712
    assert all(s.totals["macs"] == 499_712 for s in run.steps)
    assert run.workload == Workload.ddim(4, batch_size=2)
    assert run.workload.label() == "DDIM 4 steps, eta 0, batch 2, seed 0"


def test_profile_round_trips_through_json_and_dataframe() -> None:
    profile = profile_forward(_firing_sdit(), name="m", batch_size=2)
    again = Profile.from_json(profile.to_json())
    assert again == profile
    frame = profile.to_dataframe()
    assert (
        frame.loc["in_blocks.0.time_mixing.key", "macs"] == profile.layer("in_blocks.0.time_mixing.key").macs
    )
    assert int(frame["macs"].sum()) == profile.per_image["macs"]


# ---- other tools on dit-mnist --------------------------------------------------------------------


@pytest.fixture(scope="module")
def dit_mnist():
    torch.manual_seed(0)
    model = build_model("dit-mnist").eval()
    x, t = torch.randn(1, 1, 28, 28), torch.full((1,), 500)
    return model, x, t, profile_forward(model, name="dit-mnist", images=x, timestep=500)


def test_dit_mnist_totals(dit_mnist) -> None:
    *_, profile = dit_mnist
    assert profile.per_image["macs"] == 1_887_166_464
    assert profile.per_image["macs"] == sum(dit_closed_form("dit-mnist").values())


def test_dit_mnist_agrees_with_torch_flop_counter(dit_mnist) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    model, x, t, profile = dit_mnist
    with torch.no_grad(), FlopCounterMode(display=False) as flops:
        model(x, t)
    assert flops.get_total_flops() == 2 * profile.per_image["dense_macs"]  # FLOP = 2 MAC


def test_dit_mnist_agrees_with_fvcore(dit_mnist) -> None:
    from fvcore.nn import FlopCountAnalysis

    model, x, t, profile = dit_mnist
    analysis = FlopCountAnalysis(model, (x, t))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    by_op = analysis.by_operator()
    # fvcore's "flops" are MACs for conv / linear / matmul: identical to ours.
    assert by_op["conv"] + by_op["linear"] + by_op["matmul"] == profile.per_image["macs"]
    # It also folds LayerNorm into the total at 4 per element (5 with affine); we keep a column.
    assert by_op["layer_norm"] == 4 * profile.per_image["norm"]
    assert analysis.total() == profile.per_image["macs"] + 4 * profile.per_image["norm"]


def test_dit_mnist_agrees_with_thop(dit_mnist) -> None:
    import thop

    model, x, t, profile = dit_mnist
    macs, params = thop.profile(model, inputs=(x, t), verbose=False)
    # ultralytics-thop sees Linear, Conv and matmul, and adds 2 per LayerNorm element.
    assert int(macs) == profile.per_image["macs"] + 2 * profile.per_image["norm"]
    assert int(params) == 13_920_772


class FusedAttention(nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return nn.functional.scaled_dot_product_attention(q, k, v)


def test_fused_attention_is_counted_where_fvcore_is_blind() -> None:
    from fvcore.nn import FlopCountAnalysis
    from torch.utils.flop_counter import FlopCounterMode

    model = FusedAttention()
    q, k, v = (torch.randn(2, 3, 5, 8) for _ in range(3))  # (B, H, L, d)
    with LayerCounter(model) as counter, torch.no_grad(), counter.step():
        model(q, k, v)
    ((_, layers),) = counter.finish()[0]
    expected = 2 * 3 * 5 * 5 * (8 + 8)  # q k^T and attn v
    assert layers["(model)"]["macs"] == expected
    assert layers["(model)"]["softmax"] == 2 * 3 * 5 * 5
    with torch.no_grad(), FlopCounterMode(display=False) as flops:
        model(q, k, v)
    # torch's counter has formulas for the CUDA flash/efficient kernels but not for the CPU one
    # (aten._scaled_dot_product_flash_attention_for_cpu): on CPU it reports 0 for fused attention.
    assert flops.get_total_flops() == 0
    analysis = FlopCountAnalysis(model, (q, k, v))
    analysis.unsupported_ops_warnings(False)
    # fvcore has no handle for SDPA: it reports 0 and lists the op as unsupported.
    assert analysis.total() == 0
    assert any("scaled_dot_product_attention" in op for op in analysis.unsupported_ops())


def test_spike_count_by_sum_only_for_neurons_known_to_fire_zero_or_one() -> None:
    """The fast path (a float sum) counts exactly what count_nonzero counts on 0/1 spikes; a neuron whose
    surrogate does not spike (real-valued output) is still counted by count_nonzero."""
    from profiling.module_rules import binary_spikes
    from sdit.models.lif import LIFNode as OurLIF

    torch.manual_seed(0)
    for node in (neuron.LIFNode(step_mode="m"), OurLIF(step_mode="m"), neuron.IFNode(step_mode="m")):
        x = torch.randn(4, 3, 37) * 2
        net = nn.Sequential(node)
        with LayerCounter(net) as counter:
            with counter.step(index=0):
                out = net(x)
        ((_, layers),) = counter.finish()[0]
        assert binary_spikes(node, out.reshape(4, -1))
        assert layers["0"]["spikes_per_step"] == torch.count_nonzero(out.reshape(4, -1), dim=1).tolist()
    real = neuron.LIFNode(step_mode="m", surrogate_function=surrogate.ATan(spiking=False))
    assert not binary_spikes(real, torch.zeros(4, 8))
    assert not binary_spikes(neuron.LIFNode(), torch.zeros(4, 8, dtype=torch.float16))


def test_a_replayed_call_that_counted_nothing_opens_no_step() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin, self.idn = nn.Linear(4, 4, bias=False), nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.idn(self.lin(x))

    net, x = Net(), torch.randn(2, 4)
    with torch.no_grad(), LayerCounter(net) as counter:
        with counter.step(index=0):
            net(x)
        net.idn(x)  # outside any step window, twice: recorded once, replayed once, nothing counted
        net.idn(x)
    steps, _ = counter.finish()
    assert [meta for meta, _ in steps] == [{"index": 0}]
    assert steps[0][1]["lin"]["macs"] == 2 * 4 * 4


class _InPlaceAfterSpikes(nn.Module):
    """LIF spikes, changed in place (or out of place) into real values, into a Linear."""

    def __init__(self, in_place: bool) -> None:
        super().__init__()
        self.lif = neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), step_mode="m")
        self.fc = nn.Linear(6, 5)
        self.in_place = in_place

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.lif(x)  # (T, B, 6) of 0/1
        s = s.mul_(0.37).add_(0.2) if self.in_place else s.mul(0.37).add(0.2)  # real values either way
        return self.fc(s)


@pytest.mark.parametrize("in_place", [False, True])
def test_spikes_changed_in_place_are_real_values(in_place: bool) -> None:
    torch.manual_seed(0)
    net = _InPlaceAfterSpikes(in_place)
    with LayerCounter(net) as counter, counter.step(index=0):
        net(torch.randn(4, 3, 6) + 1.0)
    ((_, layers),) = counter.finish()[0]
    assert layers["lif"]["spikes"] > 0
    assert layers["fc"]["acs"] == 0 and layers["fc"]["macs"] == 4 * 3 * 6 * 5


# ---- spike propagation by rule -------------------------------------------------------------------------------


class _Forms(nn.Module):
    """Two neurons' spike trains a, b through one form, then a Linear: its ACs say whether the form's output
    was taken for spikes."""

    def __init__(self, form) -> None:
        super().__init__()
        self.form = form
        self.a, self.b = neuron.IFNode(step_mode="m"), neuron.IFNode(step_mode="m")
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.form(self.a(x), self.b(x.flip(-1))))


_BINARY_FORMS = {
    "and a * b": lambda a, b: a * b,
    "and-not a * (1 - b)": lambda a, b: a * (1.0 - b),
    "not 1 - a": lambda a, b: 1 - a,
    "or a + b - a * b": lambda a, b: a + b - a * b,
    "logical_and": lambda a, b: torch.logical_and(a, b).float(),
    "xor": lambda a, b: (a.bool() ^ b.bool()).float(),
    "maximum": lambda a, b: torch.maximum(a, b),
    "where": lambda a, b: torch.where(a > 0, a, b),
    "cat + index": lambda a, b: torch.cat([a[..., :3], b[..., 3:]], dim=-1),
    "index by tensor": lambda a, b: a[..., torch.tensor([5, 4, 3, 2, 1, 0])],
    "pad with 0": lambda a, b: nn.functional.pad(a[..., :4], (1, 1)),
    "max-pool": lambda a, b: nn.functional.max_pool1d(torch.stack([a, b], -1).flatten(-2), 2),
    "masked_fill 0": lambda a, b: a.masked_fill(b > 0, 0.0),
}
_COUNT_FORMS = {
    "add a + b": lambda a, b: a + b,
    "avg-pool": lambda a, b: nn.functional.avg_pool1d(torch.stack([a, b], -1).flatten(-2), 2),
    "scaled 2 * a": lambda a, b: 2 * a,
    "pad with 0.5": lambda a, b: nn.functional.pad(a[..., :4], (1, 1), value=0.5),
}


@pytest.mark.parametrize("form", list(_BINARY_FORMS))
def test_spike_preserving_forms_yield_spikes(form: str) -> None:
    net = _Forms(_BINARY_FORMS[form])
    x = 2 * torch.rand(3, 2, 6)
    with torch.no_grad():
        functional.reset_net(net)
        fed = net.form(net.a(x), net.b(x.flip(-1)))
        functional.reset_net(net)
    profile = profile_module(net, (x,), name="forms", strict=True, spike_detection="verify")
    assert profile.batch_size == 2  # counts are per image
    assert profile.layer("fc").macs == 0 and profile.layer("fc").acs * 2 == int(fed.count_nonzero()) * 3 > 0


@pytest.mark.parametrize("form", list(_COUNT_FORMS))
def test_counts_of_spikes_are_real_for_strict_counting(form: str) -> None:
    profile = profile_module(_Forms(_COUNT_FORMS[form]), (2 * torch.rand(3, 2, 6),), name="forms", strict=True)
    assert profile.layer("fc").acs == 0 and profile.layer("fc").macs == profile.layer("fc").dense_macs > 0


def test_pools_are_counted_ops() -> None:
    x = torch.randn(2, 3, 8, 8)
    model = nn.Sequential(nn.MaxPool2d(2), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(3), nn.AdaptiveMaxPool2d(1))
    profile = profile_module(model, (x,), name="pools", strict=True)
    # per image: max, k - 1 comparisons per window; avg, k adds (the divide folded in); adaptive 2 -> 3, windows
    # of 1, 2, 1 elements per axis (16 reads per channel); adaptive max 3 x 3 -> 1, 8 comparisons
    assert profile.layer("0").other == 3 * 16 * 3 and profile.layer("1").adds == 3 * 4 * 4
    assert profile.layer("2").adds == 3 * 16 and profile.layer("3").other == 3 * 8


def test_in_place_writes_keep_or_drop_spikes() -> None:
    class InPlace(nn.Module):
        def __init__(self, op) -> None:
            super().__init__()
            self.op, self.a, self.b, self.fc = op, neuron.IFNode(step_mode="m"), neuron.IFNode(step_mode="m"), \
                nn.Linear(6, 3)

        def forward(self, x):
            a, b = self.a(x), self.b(x)
            self.op(a, b)
            return self.fc(a)

    x = 2 * torch.rand(3, 2, 6)
    kept = profile_module(InPlace(lambda a, b: a.mul_(b)), (x,), name="kept").layer("fc")
    dropped = profile_module(InPlace(lambda a, b: a.add_(b)), (x,), name="dropped").layer("fc")
    assert kept.macs == 0 and kept.acs > 0
    assert dropped.acs == 0 and dropped.macs == dropped.dense_macs


# ---- spike_detection="verify" -------------------------------------------------------------------------------


def test_verify_lists_binary_operands_the_rules_missed() -> None:
    from profiling.spikes import SpikeDetectionError

    class Thresholded(nn.Module):  # a heaviside inline, no neuron module: binary by value, not by rule
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(6, 6), nn.Linear(6, 3)

        def forward(self, x):
            return self.fc2((self.fc1(x) > 0).float())

    model, x = Thresholded(), torch.randn(4, 6)
    assert profile_module(model, (x,), name="t").layer("fc2").acs == 0  # the default mode reads no value
    with pytest.raises(SpikeDetectionError, match="1 binary operand") as caught:
        profile_module(model, (x,), name="t", spike_detection="verify")
    assert caught.value.check.missed == [("fc2", "aten.addmm.default", 1, (4, 6))]


def test_verify_checks_that_declared_spikes_are_binary() -> None:
    from profiling.neurons import NeuronSpec
    from profiling.spikes import SpikeDetectionError

    class Graded(nn.Module):  # declared a neuron, but fires graded values
        def forward(self, x):
            return torch.relu(x)

    model = nn.Sequential(nn.Linear(6, 6), Graded(), nn.Linear(6, 3))
    profile_module(model, (torch.randn(4, 6),), name="g", neuron_types={Graded: NeuronSpec(time_axis=None)})
    with pytest.raises(SpikeDetectionError, match="1 tensor") as caught:
        profile_module(model, (torch.randn(4, 6),), name="g", neuron_types=(Graded,), spike_detection="verify")
    assert caught.value.check.not_binary == [("1", "1")]
    with pytest.raises(ValueError, match="spike_detection"):
        LayerCounter(model, spike_detection="values")


def test_the_default_mode_reads_no_value_per_op() -> None:
    """Counting a spiking net syncs nothing per op: no value is read into Python (the once-per-class check that a
    module of an undeclared class emits no binary tensor skips modules holding neurons, as ``_Forms``)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Reads(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.reads = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.item.default):
                self.reads += 1
            return func(*args, **(kwargs or {}))

    net = _Forms(_BINARY_FORMS["or a + b - a * b"])
    reads = Reads()
    with reads, LayerCounter(net) as counter, torch.no_grad(), counter.step(index=0):
        net(2 * torch.rand(3, 2, 6))
        net(2 * torch.rand(3, 2, 6))
    assert reads.reads == 0
