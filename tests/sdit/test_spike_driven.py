"""The spike-driven SDiT block (docs/spike-driven.md): what reads spikes, shapes, parameters, gradients."""

from __future__ import annotations

import pytest
import torch
from spikingjelly.activation_based import neuron
from torch import nn

import sdit.models.spike_driven as spike_driven
from sdit.config import PRESETS, SDiTConfig, get_preset
from sdit.models import build_model, count_params
from sdit.models.fused import token_shift
from sdit.models.spike_driven import TokenShiftLinear, spike_pair

SD_PRESETS = ["sdit-tiny-sd", "sdit-small-sd", "sdit-mnist-sd"]


def test_default_presets_are_not_spike_driven() -> None:
    assert SDiTConfig().spike_driven is False
    for name, config in PRESETS.items():
        if config.kind == "sdit":
            assert config.spike_driven == name.endswith("-sd"), name


@pytest.mark.parametrize("name", SD_PRESETS)
def test_spike_driven_preset_is_its_base_plus_a_flag(name: str) -> None:
    base = get_preset(name.removesuffix("-sd"))
    assert get_preset(name) == SDiTConfig(**{**base.__dict__, "spike_driven": True})


def _new_params(config: SDiTConfig) -> int:
    """Trainable parameters the spike-driven block adds: the LayerNorms in front of its inner LIFs."""
    d, n, h = config.hidden_size, config.num_tokens, config.ffn_ratio * config.hidden_size
    blocks = config.depth_in + config.depth_mid + config.depth_out
    per_block = 2 * d + 2 * h + 2 * d + 2 * n  # out_norm, hidden_norm, recon_norm, recon_mid_norm
    return blocks * per_block + config.depth_out * 2 * (2 * d)  # skip_norm over cat[h, skip]


@pytest.mark.parametrize("name", SD_PRESETS)
def test_parameters_are_the_base_models_plus_the_new_norms(name: str) -> None:
    sd, base = build_model(name), build_model(name.removesuffix("-sd"))
    base_shapes = {k: v.shape for k, v in base.state_dict().items()}
    sd_shapes = {k: v.shape for k, v in sd.state_dict().items()}
    assert {k: sd_shapes[k] for k in base_shapes} == base_shapes  # same names, same shapes
    new = set(sd_shapes) - set(base_shapes)
    assert all(k.rsplit(".", 2)[-2].endswith("norm") for k in new), sorted(new)
    added = count_params(sd).trainable_params - count_params(base).trainable_params
    assert added == _new_params(get_preset(name))
    if name == "sdit-small-sd":
        assert count_params(sd).trainable_params == 799_430
    if name == "sdit-mnist-sd":
        assert count_params(sd).trainable_params == 11_685_568


def test_token_shift_linear_is_the_linear_of_the_mix() -> None:
    torch.manual_seed(0)
    d, out = 8, 5
    s = (torch.rand(3, 6, d) < 0.3).float()  # (B', M, D) spikes
    mu = torch.rand(d)
    folded = TokenShiftLinear(d, out, bias=False)
    plain = nn.Linear(d, out, bias=False)
    plain.weight.data.copy_(folded.weight.data)
    mixed = mu * s + (1 - mu) * token_shift(s)  # RWKV's token-shift mix: real-valued
    assert not torch.all((mixed == 0) | (mixed == 1))
    pair = spike_pair(s)  # (B', M, 2D)
    assert pair.shape == (3, 6, 2 * d) and torch.all((pair == 0) | (pair == 1))
    torch.testing.assert_close(folded(pair, mu), plain(mixed))


def _firing(model: nn.Module, scale: float = 4.0) -> nn.Module:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(scale)
    return model


def test_every_linear_inside_a_block_reads_binary_spikes() -> None:
    torch.manual_seed(0)
    model = _firing(build_model("sdit-tiny-sd"))
    inputs: dict[str, torch.Tensor] = {}
    handles = [
        m.register_forward_hook(lambda mod, args, out, name=name: inputs.__setitem__(name, args[0]))
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and name.split(".")[0].endswith("blocks")
    ]
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        out = model(x, torch.tensor([10, 900]))
    for h in handles:
        h.remove()
    assert out.shape == x.shape and torch.isfinite(out).all()
    # per block: 3 + 1 time mixing, 3 channel mixing, W_D, W_N; the output block also W_skip
    assert len(inputs) == 3 * 9 + 1
    for name, value in inputs.items():
        assert torch.all((value == 0) | (value == 1)), name
        assert 0 < value.mean() < 1, name  # fires, and not always


@pytest.mark.parametrize("name", ["sdit-tiny-sd", "sdit-small-sd"])
def test_output_shape_and_state_reset(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name).eval()
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([0, 999])
    with torch.no_grad():
        first, second = model(x, t), model(x, t)
    assert first.shape == (2, 1, 28, 28)
    torch.testing.assert_close(first, second, rtol=0, atol=0)  # neuron state reset after every forward
    lifs = [m for m in model.modules() if isinstance(m, neuron.LIFNode)]
    assert len(lifs) == 3 * 6 + 1  # per block attn, out, ffn, hidden, recon, recon_mid; plus the skip's
    assert len({id(m.surrogate_function) for m in lifs}) == len(lifs)


def test_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    model = build_model("sdit-tiny-sd").train()
    x, t = torch.randn(4, 1, 28, 28), torch.tensor([1, 300, 600, 999])
    model(x, t).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []  # every new LIF passes gradient through its surrogate; no unused parameter (DDP)


def _pair_form_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force Eq. SD-3's counted form (binary pairs) wherever the mix form would run."""
    monkeypatch.setattr(spike_driven, "_hooked", lambda *modules, backward=False: True)


def _count_pairs(monkeypatch: pytest.MonkeyPatch) -> list[torch.Size]:
    """The shapes of the spikes each counted-form call (``spike_pair``) reads, appended as they come."""
    pairs: list[torch.Size] = []
    real_pair = spike_driven.spike_pair
    monkeypatch.setattr(spike_driven, "spike_pair", lambda s: pairs.append(s.shape) or real_pair(s))
    return pairs


def test_training_form_equals_the_counted_form_in_value_and_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    # float64, so that the two forms' rounding (1e-16) cannot move a membrane across a threshold
    torch.manual_seed(0)
    model = _firing(build_model("sdit-tiny-sd")).double().train()
    x, t = torch.randn(3, 1, 28, 28, dtype=torch.float64), torch.tensor([1, 500, 999])
    pairs = _count_pairs(monkeypatch)

    def value_and_grads() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        out = model(x, t)
        out.square().mean().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    mix_out, mix_grads = value_and_grads()
    assert pairs == []  # autograd on, nothing hooked: the mix form (fan-in D) ran
    _pair_form_only(monkeypatch)
    pair_out, pair_grads = value_and_grads()
    assert len(pairs) == 3 * 2  # one pair per branch of each of the three blocks
    torch.testing.assert_close(mix_out, pair_out, rtol=1e-12, atol=1e-12)
    assert mix_grads.keys() == pair_grads.keys()
    for name in mix_grads:
        torch.testing.assert_close(mix_grads[name], pair_grads[name], rtol=1e-9, atol=1e-12, msg=name)


def test_without_autograd_the_counted_form_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    # sampling, evaluation and profiling see the same binary pairs, so their spikes are bit-identical
    model = build_model("sdit-tiny-sd").eval()
    pairs = _count_pairs(monkeypatch)
    with torch.no_grad():
        model(torch.randn(2, 1, 28, 28), torch.tensor([0, 999]))
    assert len(pairs) == 3 * 2


@pytest.mark.parametrize("kernels", [True, False])
def test_shift_linears_float32_forms_agree_in_value_and_gradient(monkeypatch: pytest.MonkeyPatch,
                                                                 kernels: bool) -> None:
    # the float32 path training takes (the C kernels of the mixes, forward and backward, when built)
    # against the counted pair form, on fixed spikes: no threshold in between, so nothing can flip
    from sdit.models import cpu_kernels

    if kernels and not cpu_kernels.available():
        pytest.skip("C kernels not built")
    if not kernels:
        monkeypatch.setattr(cpu_kernels, "available", lambda: False)
    torch.manual_seed(0)
    d, hidden = 16, 48
    s = (torch.rand(6, 10, d) < 0.3).float()  # (B', M, D) spikes
    layers = (TokenShiftLinear(d, hidden, bias=False), TokenShiftLinear(d, d, bias=False))
    mus = tuple(nn.Parameter(torch.rand(d)) for _ in layers)
    weights = (torch.randn(6, 10, hidden), torch.randn(6, 10, d))

    def run(pair_form: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        for p in (*mus, *(m.weight for m in layers)):
            p.grad = None
        x = s.clone().requires_grad_(True)
        if pair_form:
            _pair_form_only(monkeypatch)
        outs = spike_driven.shift_linears(x, layers, mus)
        sum((o * w).sum() for o, w in zip(outs, weights)).backward()
        return [o.detach() for o in outs], [x.grad, *(mu.grad for mu in mus), *(m.weight.grad for m in layers)]

    pairs = _count_pairs(monkeypatch)
    mix_out, mix_grads = run(pair_form=False)
    assert pairs == []
    pair_out, pair_grads = run(pair_form=True)
    assert pairs == [(6, 10, d)]
    for a, b in zip(mix_out, pair_out, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(mix_grads, pair_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_a_hooked_or_subclassed_layer_takes_the_counted_form() -> None:
    s = (torch.rand(2, 5, 8) < 0.5).float()
    plain = (TokenShiftLinear(8, 8, bias=False),)
    mu = (torch.rand(8),)
    assert spike_driven._mix_form_fits(plain)
    handle = plain[0].register_full_backward_hook(lambda *args: None)
    assert not spike_driven._mix_form_fits(plain)  # a backward hook must see the layer's own call
    handle.remove()

    class Wrapped(TokenShiftLinear):
        pass

    assert not spike_driven._mix_form_fits((Wrapped(8, 8, bias=False),))
    with torch.no_grad():
        assert not spike_driven._mix_form_fits(plain)
        assert spike_driven.shift_linears(s, plain, mu)[0].shape == (2, 5, 8)
