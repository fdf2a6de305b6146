"""DiT, the ANN baseline (Peebles & Xie 2023; docs/design.md §3).

adaLN-Zero blocks over (B, L, D) patch tokens, a frozen 2-D sin-cos position
table, no class conditioning, noise-only output. Attention is written out as two
``torch.matmul`` calls around a softmax, so an op counter sees every product
(fused scaled-dot-product attention would hide them on some backends).

That explicit form is what the profiler counts. Outside its counting dispatch mode
(:func:`sdit.models.fused.counting`) the blocks take a fused path with the same
maths, up to float rounding: ``scaled_dot_product_attention`` for the attention,
``addcmul`` for adaLN's modulation and the gated residuals, with hand-written
backwards, and on CPU float32 one C pass for the MLP's fc1 bias and GELU(tanh)
(:mod:`sdit.models.fused`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sdit.config import DiTConfig
from sdit.models.embed import TimestepEmbedder, check_image, sincos_pos_embed_2d, unpatchify
from sdit.models.fused import counting, gated_residual, gelu_mlp, norm_modulate, split_heads
from sdit.models.quant import replace_linears


class Attention(nn.Module):
    """Multi-head self-attention with explicit matmuls: softmax(q k^T / sqrt(d)) v."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).view(batch, tokens, 3, self.num_heads, self.head_dim)  # (B, L, 3, H, d)
        q, k, v = split_heads(qkv)  # (B, H, L, d) each
        if not counting():  # fused attention, the same softmax(q k^T / sqrt(d)) v
            out = nn.functional.scaled_dot_product_attention(q, k, v)  # (B, H, L, d)
            return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))  # (B, L, D)
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, H, L, L)
        attn = torch.softmax(scores, dim=-1)  # (B, H, L, L)
        out = torch.matmul(attn, v)  # (B, H, L, d)
        out = out.transpose(1, 2).reshape(batch, tokens, dim)  # (B, L, D)
        return self.proj(out)


class DiTBlock(nn.Module):
    """adaLN-Zero transformer block: attention and a GELU(tanh) MLP, gated by the time embedding."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(approximate="tanh"), nn.Linear(mlp_ratio * dim, dim)
        )
        self.adaln = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaln(c).chunk(6, dim=-1)  # (B, D) each
        x = gated_residual(x, gate1, self.attn(norm_modulate(self.norm1, x, shift1, scale1)))  # (B, L, D)
        return gated_residual(x, gate2, gelu_mlp(self.mlp, norm_modulate(self.norm2, x, shift2, scale2)))  # (B, L, D)


class FinalLayer(nn.Module):
    """adaLN, then Linear(D, p*p*C) per token."""

    def __init__(self, dim: int, patch_size: int, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch_size * patch_size * channels)
        self.adaln = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaln(c).chunk(2, dim=-1)  # (B, D) each
        return self.linear(norm_modulate(self.norm, x, shift, scale))  # (B, L, p*p*C)


class DiT(nn.Module):
    """Diffusion Transformer predicting the noise of (B, C, H, W) images at timesteps t."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        dim, p, c = config.hidden_size, config.patch_size, config.in_channels
        self.patch_embed = nn.Conv2d(c, dim, kernel_size=p, stride=p)
        self.time_embed = TimestepEmbedder(dim, config.freq_dim)
        grid = config.image_size // p
        pos = sincos_pos_embed_2d(dim, grid)[None]  # (1, L, D)
        self.pos_embed = nn.Parameter(pos, requires_grad=False)  # frozen, counted in params (all)
        self.blocks = nn.ModuleList(
            DiTBlock(dim, config.num_heads, config.mlp_ratio) for _ in range(config.depth)
        )
        self.final = FinalLayer(dim, p, c)
        self._init_weights()
        if config.quantized:  # integer Linears, filled by sdit.models.quant.calibrate or a checkpoint
            replace_linears(self, config.weight_bits, config.activation_bits)

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        for lin in (self.time_embed.mlp[0], self.time_embed.mlp[2]):
            nn.init.normal_(lin.weight, std=0.02)
        # adaLN-Zero: every block starts as the identity, the output as zero.
        for block in self.blocks:
            nn.init.zeros_(block.adaln[-1].weight)
            nn.init.zeros_(block.adaln[-1].bias)
        for lin in (self.final.adaln[-1], self.final.linear):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Predict epsilon: (B, C, H, W) images, (B,) timesteps -> (B, C, H, W)."""
        cfg = self.config
        check_image(x, cfg.in_channels, cfg.image_size)
        # pos first: the sum takes its contiguous (B, L, D) layout, not the transposed conv output's, so the
        # LayerNorms and multiply-adds of every block run on contiguous rows (the same sum, no extra copy).
        h = self.pos_embed + self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, L, D)
        c = self.time_embed(t)  # (B, D)
        for block in self.blocks:
            h = block(h, c)  # (B, L, D)
        h = self.final(h, c)  # (B, L, p*p*C)
        return unpatchify(h, cfg.patch_size, cfg.in_channels)  # (B, C, H, W)
