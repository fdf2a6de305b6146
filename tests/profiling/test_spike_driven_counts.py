"""Strict ACs of the spike-driven SDiT (docs/spike-driven.md) against a closed form over its spikes."""

from __future__ import annotations

import torch
from spikingjelly.activation_based import neuron
from torch import nn

from profiling.profile import Profile
from profiling.workloads import profile_forward
from sdit.config import get_preset
from sdit.models import build_model

BLOCKS = ("in_blocks", "mid_blocks", "out_blocks")


def _record_spikes(model: nn.Module) -> tuple[dict[str, torch.Tensor], list]:
    """Forward hooks that keep every LIF layer's output, (T, B, ...) spikes, by layer name."""
    spikes: dict[str, torch.Tensor] = {}
    handles = [
        m.register_forward_hook(lambda mod, args, out, name=name: spikes.__setitem__(name, out.detach().clone()))
        for name, m in model.named_modules()
        if isinstance(m, neuron.LIFNode)
    ]
    return spikes, handles


def _nnz(x: torch.Tensor) -> int:
    return int(torch.count_nonzero(x))


def spike_driven_closed_form(name: str, spikes: dict[str, torch.Tensor]) -> dict[str, int]:
    """ACs of every synaptic layer inside the blocks, over the whole batch: nnz(spike input) x fan-out.

    A token-shift layer reads the pair [s_n, s_{n-1}], so its spike input has
    nnz(s) + nnz(s without its last token) non-zeros (the shift drops the last token
    and puts a zero row first). W_N reads the transposed W_D spikes: same non-zeros.
    """
    cfg = get_preset(name)
    d, n, h = cfg.hidden_size, cfg.num_tokens, cfg.ffn_ratio * cfg.hidden_size

    def pair(s: torch.Tensor) -> int:  # s: (T, B, M, D)
        return _nnz(s) + _nnz(s[:, :, :-1])

    acs = {}
    blocks = [f"{kind}.{i}" for kind, depth in zip(BLOCKS, (cfg.depth_in, cfg.depth_mid, cfg.depth_out))
              for i in range(depth)]
    for b in blocks:
        attn, ffn = spikes[f"{b}.attn_lif"], spikes[f"{b}.ffn_lif"]
        for lin in ("key", "value", "receptance"):
            acs[f"{b}.time_mixing.{lin}"] = pair(attn) * d
        acs[f"{b}.time_mixing.output"] = _nnz(spikes[f"{b}.time_mixing.out_lif"]) * d
        acs[f"{b}.channel_mixing.key"] = pair(ffn) * h
        acs[f"{b}.channel_mixing.receptance"] = pair(ffn) * d
        acs[f"{b}.channel_mixing.value"] = _nnz(spikes[f"{b}.channel_mixing.hidden_lif"]) * d
        acs[f"{b}.recon_d"] = _nnz(spikes[f"{b}.recon_lif"]) * n  # W_D: D -> N
        acs[f"{b}.recon_n"] = _nnz(spikes[f"{b}.recon_mid_lif"]) * d  # W_N: N -> D
        if b.startswith("out_blocks"):
            acs[f"{b}.skip_linear"] = _nnz(spikes[f"{b}.skip_lif"]) * d
    return acs


def _in_blocks(profile: Profile) -> list:
    return [r for r in profile.layers if r.name.split(".")[0] in BLOCKS]


def test_sdit_tiny_sd_acs_match_closed_form() -> None:
    torch.manual_seed(0)
    model = build_model("sdit-tiny-sd")
    spikes, handles = _record_spikes(model)
    batch = 2
    profile = profile_forward(model, name="sdit-tiny-sd", batch_size=batch, strict=True)
    for handle in handles:
        handle.remove()
    assert all(_nnz(s) > 0 for s in spikes.values())  # every LIF fires, so every AC term is tested
    expected = spike_driven_closed_form("sdit-tiny-sd", spikes)
    got = {r.name: r.acs * batch for r in _in_blocks(profile) if r.acs or r.dense_macs}
    assert got == expected
    assert all(r.macs == 0 for r in _in_blocks(profile))  # no MAC inside a block
    # outside the blocks the encoder and decoder stay dense, as in sdit-tiny
    cfg = get_preset("sdit-tiny-sd")
    d, p, n = cfg.hidden_size, cfg.patch_size, cfg.num_tokens
    outside = {r.name: r.macs for r in profile.layers if r.macs}
    assert outside == {
        "patch_embed": cfg.num_patches * d * p * p,
        "time_embed.mlp.0": cfg.freq_dim * d,
        "time_embed.mlp.2": d * d,
        "final_linear": n * d * p * p,
        "final_conv": 28 * 28 * 9,
    }
    # a token-shift layer's dense size is its folded fan-in 2D
    m = 2 * n
    assert profile.layer("in_blocks.0.time_mixing.key").dense_macs == cfg.time_steps * m * 2 * d * d


def test_strict_acs_are_most_synaptic_ops_inside_blocks_of_sdit_small_sd() -> None:
    torch.manual_seed(0)
    profile = profile_forward(build_model("sdit-small-sd"), name="sdit-small-sd", batch_size=1, strict=True)
    layers = _in_blocks(profile)
    acs, macs = sum(r.acs for r in layers), sum(r.macs for r in layers)
    assert acs > 0
    assert acs / (acs + macs) >= 0.9
    # the paper's block, for contrast: no AC at all
    plain = profile_forward(build_model("sdit-small"), name="sdit-small", batch_size=1)
    assert sum(r.acs for r in _in_blocks(plain)) == 0
