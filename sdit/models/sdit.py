"""The Spiking Diffusion Transformer (paper §III, docs/design.md §1).

Shapes: B batch, T spiking steps, N = L + 1 tokens (time token + patches), D hidden.
Inside blocks activations are (T*B, M, D) with M = 2N when the Reconstruction
Token is on (M = N otherwise); each LIF neuron sees them as (T, B, M, D).

With ``time_encoding="branch"`` (the authors' code, docs/authors-layout.md §3.5) the stream
has no time axis: blocks see (B, M, D) and only the LIF runs over T, on T copies of
its branch's output, (T, B, M, D), averaged back to (B, M, D).

This module holds the paper's block (Eq. 4-13); ``SDiTConfig.spike_driven`` builds the SDiT from
the spike-driven block of docs/spike-driven.md instead (:mod:`sdit.models.spike_driven`: a LIF at
the head of every branch, so every Linear inside a block reads spikes).
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import functional
from torch import Tensor, nn

from sdit.config import SDiTConfig
from sdit.models.authors_init import init_authors
from sdit.models.embed import LabelEmbedder, TimestepEmbedder, check_image, unpatchify
from sdit.models.fused import shift_mixes
from sdit.models.layers import (
    BlockBase,
    ChannelMixingBase,
    TimeMixingBase,
    make_norm,
    relu_square,
    sigmoid_gate,
)
from sdit.models.spike_driven import SpikeDrivenBlock
from sdit.models.wkv import WKV


class TimeMixing(TimeMixingBase):
    """RWKV-4 time mixing: o = W_o(sigmoid(r) * wkv(k, v)) (Eq. 1-2)."""

    def __init__(self, config: SDiTConfig, layer_id: int, num_layers: int) -> None:
        super().__init__(config, layer_id, num_layers)
        dim = config.hidden_size
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.receptance = nn.Linear(dim, dim, bias=False)
        self.output = nn.Linear(dim, dim, bias=False)
        self.wkv = WKV()

    def forward(self, x: Tensor) -> Tensor:
        # RWKV token-shift mixes mu * x_n + (1 - mu) * x_{n-1}, sharing x_n - x_{n-1} (sdit.models.fused).
        mix_k, mix_v, mix_r = shift_mixes(x, (self.mu_k, self.mu_v, self.mu_r))  # (B', M, D) each
        k = self.key(mix_k)  # (B', M, D)
        v = self.value(mix_v)  # (B', M, D)
        r = self.receptance(mix_r)  # (B', M, D)
        return self.output(sigmoid_gate(r, self.wkv(self.time_decay, self.time_first, k, v)))  # Eq. 2


class ChannelMixing(ChannelMixingBase):
    """RWKV-4 channel mixing: o = sigmoid(W_r x_r) * W_v(relu(W_k x_k)^2) (Eq. 3)."""

    def __init__(self, config: SDiTConfig, layer_id: int, num_layers: int) -> None:
        super().__init__(config, layer_id, num_layers)
        dim, hidden = config.hidden_size, config.ffn_ratio * config.hidden_size
        self.key = nn.Linear(dim, hidden, bias=False)
        self.value = nn.Linear(hidden, dim, bias=False)
        self.receptance = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        mix_k, mix_r = shift_mixes(x, (self.mu_k, self.mu_r))  # (B', M, D) each
        k = relu_square(self.key(mix_k))  # (B', M, 4D)
        r = self.receptance(mix_r)  # (B', M, D)
        return sigmoid_gate(r, self.value(k))  # Eq. 3, (B', M, D)


class SpikingBlock(BlockBase):
    """Spiking Transformer Block (Fig. 2): Eq. 4-13."""

    time_mixing_class = TimeMixing
    channel_mixing_class = ChannelMixing

    def forward(self, h: Tensor, skip: Tensor | None = None) -> Tensor:
        if self.skip_linear is not None:
            if skip is None:
                raise ValueError("an output block needs the skip of its input block")
            h = self.skip_linear(torch.cat([h, skip], dim=-1))  # Eq. 4-5, (T*B, N, D)
        tokens = h.shape[1]
        x = self._append_recon_token(h)  # Eq. 6, (T*B, M, D)
        x = x + self._spike(self.attn_lif, self.time_mixing(self.ln1(x)))  # Eq. 7
        x = x + self._spike(self.ffn_lif, self.channel_mixing(self.ln2(x)))  # Eq. 8
        if self.recon_token is None:
            return x
        y, z = x[:, :tokens], x[:, tokens:]  # Eq. 10, (T*B, N, D) each
        z_d = self.recon_d(z)  # Eq. 11, (T*B, N, N)
        z_n = self.recon_n(z_d.transpose(1, 2))  # Eq. 12, (T*B, N, D)
        return torch.addcmul(y, z_n, y)  # Eq. 13: y + z_n * y


@torch.compiler.disable
def _reset_neurons(net: nn.Module) -> None:
    """``functional.reset_net`` outside any torch.compile graph: traced, its module cache (a WeakKeyDictionary
    that the garbage collector changes at any time) became a Dynamo guard that failed to build now and then."""
    functional.reset_net(net)


class SDiT(nn.Module):
    """Spiking Diffusion Transformer: predicts the noise of (B, C, H, W) images at timesteps t."""

    def __init__(self, config: SDiTConfig) -> None:
        super().__init__()
        self.config = config
        dim, p, c = config.hidden_size, config.patch_size, config.in_channels
        self.patch_embed = nn.Conv2d(c, dim, kernel_size=p, stride=p)
        self.time_embed = TimestepEmbedder(dim, config.freq_dim)
        # Class-conditional (authors): the label embedding joins the time embedding in the condition token.
        self.label_embed = LabelEmbedder(config.num_classes, dim, config.class_dropout) if config.num_classes else None
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_tokens, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        num_layers = config.depth_in + config.depth_mid + config.depth_out
        ids = iter(range(num_layers))
        block = SpikeDrivenBlock if config.spike_driven else SpikingBlock
        self.in_blocks = nn.ModuleList(
            block(config, next(ids), num_layers, skip=False) for _ in range(config.depth_in)
        )
        self.mid_blocks = nn.ModuleList(
            block(config, next(ids), num_layers, skip=False) for _ in range(config.depth_mid)
        )
        self.out_blocks = nn.ModuleList(
            block(config, next(ids), num_layers, skip=True) for _ in range(config.depth_out)
        )
        self.final_norm = make_norm(config)
        out_c = config.out_channels
        self.final_linear = nn.Linear(dim, p * p * out_c)
        self.final_conv = nn.Conv2d(out_c, out_c, kernel_size=3, padding=1)
        if config.init == "authors":
            init_authors(self)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None, *, reset: bool = True) -> Tensor:
        """Predict epsilon (and, with ``learn_sigma``, the variance interpolation).

        Args:
            x: (B, C, H, W) noisy images.
            t: (B,) diffusion timesteps.
            y: (B,) class labels of a class-conditional model (``num_classes`` > 0); ``None`` is the null
                (unconditional) class K. A model without labels refuses them.
            reset: Reset the neuron state before returning (always, in training and sampling). ``False``
                keeps each LIF's membrane for the next call (the authors' fixture ``out_carry``); the next
                call must have the same batch size.

        Returns:
            (B, C, H, W) predicted noise, or (B, 2C, H, W) with ``learn_sigma`` (noise first).
        """
        try:
            out = self._forward(x, t, y)
        except BaseException:
            _reset_neurons(self)
            raise
        if reset:
            _reset_neurons(self)
        return out

    def _condition(self, t: Tensor, y: Tensor | None) -> Tensor:
        """The condition token: t_emb, plus the label embedding in a class-conditional model, (B, D)."""
        cond = self.time_embed(t)  # (B, D)
        if self.label_embed is None:
            if y is not None:
                raise ValueError("this model is not class-conditional (num_classes = 0); pass no labels")
            return cond
        return cond + self.label_embed(y, batch=t.shape[0])  # (B, D)

    def _forward(self, x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        cfg = self.config
        check_image(x, cfg.in_channels, cfg.image_size)
        batch = x.shape[0]
        stream = cfg.time_encoding == "stream"
        h = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, L, D)
        h = torch.cat([self._condition(t, y)[:, None], h], dim=1)  # condition token first, (B, N, D)
        h = h + self.pos_embed  # (B, N, D)
        if stream:
            # Direct encoding: the same real-valued input at each of the T steps.
            h = h.unsqueeze(0).expand(cfg.time_steps, -1, -1, -1)  # (T, B, N, D)
            h = h.reshape(cfg.time_steps * batch, cfg.num_tokens, cfg.hidden_size)  # (T*B, N, D)
        skips = []
        for block in self.in_blocks:
            h = block(h)
            skips.append(h)
        for block in self.mid_blocks:
            h = block(h)
        for block in self.out_blocks:
            h = block(h, skips.pop())  # last in, first out (U-ViT)
        if stream:
            h = h.view(cfg.time_steps, batch, cfg.num_tokens, cfg.hidden_size).mean(0)  # (B, N, D)
        h = self.final_linear(self.final_norm(h))  # (B, N, p*p*C')
        img = unpatchify(h[:, 1:], cfg.patch_size, cfg.out_channels)  # drop time token, (B, C', H, W)
        return self.final_conv(img)  # (B, C', H, W), C' = C or 2C
