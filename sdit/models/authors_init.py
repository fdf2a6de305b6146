"""The initialisation of the authors' SDiT code (docs/authors-layout.md §4), for ``SDiTConfig(init="authors")``.

Only training from scratch depends on it: a loaded checkpoint replaces every tensor. Walks the modules
of an :class:`sdit.models.sdit.SDiT` by attribute; imports nothing from it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def authors_layer_ids(depth_in: int, depth_mid: int, depth_out: int) -> tuple[list[int], list[int], list[int]]:
    """Layer ids of the RWKV ramps: input block i has i, the mid block ``depth_in``, output block i has i again.

    The authors' code gives output blocks the input blocks' ids instead of continuing the count.
    """
    return list(range(depth_in)), [depth_in] * depth_mid, list(range(depth_out))


def rwkv_ramps(dim: int, layer_id: int, num_layers: int) -> dict[str, Tensor]:
    """The RWKV-4 ramps of the authors' code, in float32 (docs/authors-layout.md §4).

    With r01 = l / (n - 1), r10 = 1 - l / n and x_c = c / D for channel c:
    time_decay = -5 + 8 (c / (D - 1))^(0.7 + 1.3 r01); time_first = ln 0.3 + 0.5 (((c + 1) mod 3) - 1);
    att mixes x^r10, x^r10 + 0.3 r01, x^(0.5 r10); ffn mixes x^r10 (both).

    Args:
        num_layers: n, the authors' ``depth`` argument (input + output blocks, not counting the mid block).

    Returns:
        ``time_decay``, ``time_first`` (D,), ``att_k``, ``att_v``, ``att_r``, ``ffn_k``, ``ffn_r`` (D,).
    """
    r01 = layer_id / (num_layers - 1)
    r10 = 1.0 - layer_id / num_layers
    c = torch.arange(dim, dtype=torch.float32)  # (D,)
    x = c / dim  # (D,)
    decay = -5 + 8 * (c / (dim - 1)) ** (0.7 + 1.3 * r01)
    zigzag = ((torch.arange(dim) + 1) % 3 - 1).to(torch.float32) * 0.5  # 0, +0.5, -0.5, ...
    first = torch.full((dim,), math.log(0.3), dtype=torch.float32) + zigzag
    return {
        "time_decay": decay, "time_first": first,
        "att_k": x ** r10, "att_v": x ** r10 + 0.3 * r01, "att_r": x ** (0.5 * r10),
        "ffn_k": x ** r10, "ffn_r": x ** r10,
    }


def _xavier_(linear: nn.Linear) -> None:
    nn.init.xavier_uniform_(linear.weight)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


@torch.no_grad()
def init_authors(model: nn.Module) -> None:
    """Re-initialise a freshly built SDiT the way the authors' constructor does.

    The RWKV Linears keep PyTorch's default init (their Xavier pass cannot see them); W_D, W_N and the
    skip Linears get Xavier-uniform weights and zero biases; the patch conv Xavier on its (D, C p^2) view;
    the time MLP and label table N(0, 0.02^2); position table and final Linear zero; reconstruction
    tokens ones; the final 3x3 conv keeps PyTorch's default.
    """
    cfg = model.config
    w = model.patch_embed.weight  # (D, C, p, p)
    nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # (D, C p^2)
    nn.init.zeros_(model.patch_embed.bias)
    for index in (0, 2):
        nn.init.normal_(model.time_embed.mlp[index].weight, std=0.02)
        nn.init.zeros_(model.time_embed.mlp[index].bias)
    if model.label_embed is not None:
        nn.init.normal_(model.label_embed.table.weight, std=0.02)
    nn.init.zeros_(model.pos_embed)
    nn.init.zeros_(model.final_linear.weight)
    nn.init.zeros_(model.final_linear.bias)
    num_layers = cfg.depth_in + cfg.depth_out
    ids = authors_layer_ids(cfg.depth_in, cfg.depth_mid, cfg.depth_out)
    for blocks, layer_ids in zip((model.in_blocks, model.mid_blocks, model.out_blocks), ids, strict=True):
        for block, layer_id in zip(blocks, layer_ids, strict=True):
            ramps = rwkv_ramps(cfg.hidden_size, layer_id, num_layers)
            tm, cm = block.time_mixing, block.channel_mixing
            tm.time_decay.copy_(ramps["time_decay"])
            tm.time_first.copy_(ramps["time_first"])
            tm.mu_k.copy_(ramps["att_k"])
            tm.mu_v.copy_(ramps["att_v"])
            tm.mu_r.copy_(ramps["att_r"])
            cm.mu_k.copy_(ramps["ffn_k"])
            cm.mu_r.copy_(ramps["ffn_r"])
            if block.skip_linear is not None:
                _xavier_(block.skip_linear)
            if block.recon_token is not None:
                nn.init.ones_(block.recon_token)
                _xavier_(block.recon_d)
                _xavier_(block.recon_n)
