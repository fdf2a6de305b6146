"""Embeddings shared by SDiT and DiT: timestep MLP, patch layout, 2-D sin-cos table."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def timestep_frequencies(dim: int, max_period: float = 10_000.0) -> Tensor:
    """(dim/2,) frequencies ``f_j = max_period^(-j / (dim/2))`` of the sinusoidal features."""
    half = dim // 2
    return torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / half).float()


def timestep_features(t: Tensor, freqs: Tensor) -> Tensor:
    """Sinusoidal features of diffusion timesteps (Transformer / DDPM style).

    Args:
        t: (B,) integer or real timesteps.
        freqs: (F/2,) from :func:`timestep_frequencies`.

    Returns:
        (B, F) float32: ``[cos(t f_j), sin(t f_j)]``.
    """
    args = t.float()[:, None] * freqs[None]  # (B, F/2)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, F)


class TimestepEmbedder(nn.Module):
    """sinusoid(freq_dim) -> Linear -> SiLU -> Linear: (B,) timesteps -> (B, D)."""

    def __init__(self, hidden_size: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        # A buffer, not recomputed per call: per-image op counts must not depend on batch size.
        self.register_buffer("freqs", timestep_frequencies(freq_dim), persistent=False)
        self.mlp = nn.Sequential(
            nn.Linear(freq_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, t: Tensor) -> Tensor:
        dtype = next(p.dtype for p in self.mlp.parameters() if p.is_floating_point())  # a quantized weight is int8
        feats = timestep_features(t, self.freqs).to(dtype)  # (B, F)
        return self.mlp(feats)  # (B, D)


class LabelEmbedder(nn.Module):
    """Class labels -> (B, D), with a null class K and label dropout (DiT / the authors' SDiT).

    Args:
        num_classes: K real classes, 0..K-1.
        hidden_size: D.
        dropout: Training-time probability of replacing a label by the null class K; the table gets the
            null row K only when it is above 0 (as in the authors' code).
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.dropout = dropout
        self.table = nn.Embedding(num_classes + (1 if dropout > 0 else 0), hidden_size)

    @property
    def has_null_class(self) -> bool:
        return self.table.num_embeddings > self.num_classes

    def forward(self, y: Tensor | None, batch: int) -> Tensor:
        """Embed (B,) labels in 0..K (K the null class); ``None`` means the null class for all ``batch``."""
        if y is None:
            if not self.has_null_class:
                raise ValueError("this model has no null class (class_dropout = 0); pass labels")
            y = torch.full((batch,), self.num_classes, dtype=torch.long, device=self.table.weight.device)
        if self.training and self.dropout > 0:
            drop = torch.rand(y.shape[0], device=y.device) < self.dropout  # (B,), a fresh draw per sample
            y = torch.where(drop, self.num_classes, y)
        return self.table(y)  # (B, D)


def unpatchify(x: Tensor, patch_size: int, channels: int) -> Tensor:
    """(B, L, p*p*C) patch tokens in raster order -> (B, C, H, W) image."""
    batch, tokens, _ = x.shape
    grid = math.isqrt(tokens)
    x = x.reshape(batch, grid, grid, patch_size, patch_size, channels)  # (B, h, w, p, p, C)
    x = x.permute(0, 5, 1, 3, 2, 4)  # (B, C, h, p, w, p)
    return x.reshape(batch, channels, grid * patch_size, grid * patch_size)  # (B, C, H, W)


def sincos_pos_embed_2d(dim: int, grid: int) -> Tensor:
    """Fixed 2-D sin-cos position table (MAE / DiT convention): (grid*grid, dim).

    Half the channels encode the row, half the column, each as 1-D sin-cos features.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs dim divisible by 4, got {dim}")
    coords = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")  # (grid, grid) each
    quarter = dim // 4
    omega = 1.0 / 10_000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # (dim/4,)

    def one_axis(pos: Tensor) -> Tensor:
        args = pos.reshape(-1, 1) * omega[None]  # (grid*grid, dim/4)
        return torch.cat([torch.sin(args), torch.cos(args)], dim=1)  # (grid*grid, dim/2)

    return torch.cat([one_axis(cols), one_axis(rows)], dim=1).float()  # (grid*grid, dim)


def check_image(x: Tensor, channels: int, size: int) -> None:
    """Raise ValueError unless ``x`` is a (B, channels, size, size) batch."""
    expected = (channels, size, size)
    if x.dim() != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(
            f"expected images of shape (B, {channels}, {size}, {size}), got {tuple(x.shape)}"
        )
