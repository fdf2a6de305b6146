"""The spike-driven SDiT block (docs/spike-driven.md, Eq. SD-1 to SD-7): every Linear inside it reads spikes.

Against the paper's block (:mod:`sdit.models.sdit`), ``attn_lif`` and ``ffn_lif`` move from the tail of
their branch to its head, the skip and the Reconstruction Module read spikes through their own LIFs
(each behind a LayerNorm), and the residual stream stays real. Parameter names are those of the
paper's block plus the new norms, so checkpoints of either load by name.

Shapes: B' = T*B sequences of M tokens of D channels; spikes are 0/1 of the same shapes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sdit.config import SDiTConfig
from sdit.models.fused import _hooked, counting, shift_mixes, token_shift
from sdit.models.layers import BlockBase, ChannelMixingBase, TimeMixingBase, make_lif, run_lif, sigmoid_gate
from sdit.models.wkv import WKV


def spike_pair(s: Tensor) -> Tensor:
    """[s_n, s_{n-1}] along channels: (B', M, D) spikes -> (B', M, 2D), still binary."""
    return torch.cat([s, token_shift(s)], dim=-1)


class TokenShiftLinear(nn.Linear):
    """A bias-free Linear on RWKV's token-shift mix of spikes, the mix folded into the weight.

    W (mu * s_n + (1 - mu) * s_{n-1}) = [W diag(mu), W diag(1 - mu)] [s_n; s_{n-1}]
    (docs/spike-driven.md, Eq. SD-3): the mix of two spike vectors is real-valued, the
    pair is binary, so the layer reads spikes with fan-in 2D. Its parameter is the
    same ``weight`` (out x D) as the plain Linear's; folding it costs 2 x out x D
    elementwise ops per call (once per deployment, in hardware).
    """

    def forward(self, pair: Tensor, mu: Tensor) -> Tensor:  # pair: (B', M, 2D) spikes, mu: (D,)
        w = self.weight  # (out, D)
        folded = torch.cat([w * mu, w - w * mu], dim=1)  # (out, 2D)
        return nn.functional.linear(pair, folded)  # (B', M, out)


def _mix_form_fits(layers: tuple[nn.Module, ...]) -> bool:
    """Training, nothing counting, the layers plain TokenShiftLinears that no forward or backward hook watches."""
    return (torch.is_grad_enabled() and not counting() and all(type(m) is TokenShiftLinear for m in layers)
            and not _hooked(*layers, backward=True))


def shift_linears(s: Tensor, layers: tuple[TokenShiftLinear, ...], mus: tuple[Tensor, ...]) -> list[Tensor]:
    """The TokenShiftLinears of one branch on spikes s (B', M, D), one output (B', M, out) per layer.

    The counted form is Eq. SD-3's right-hand side: binary [s_n; s_{n-1}] against the folded
    weight, so the profiler sees fan-in 2D and an input of spikes. While training (autograd on)
    with nothing counting (dispatch mode, jit / fx trace) or hooking the layers, the left-hand
    side instead: the real mixes mu * s_n + (1 - mu) * s_{n-1} (``shift_mixes``) against the
    (out, D) weight, half the multiply-adds, the same function and gradients up to float rounding
    (float32 may flip a spike near threshold). Without autograd (``sample()``, evaluation, every
    ``profile_*`` function) the counted form always runs, so a profiled run and a plain one see
    bit-identical spikes. The mix form saves its D-wide mixes for the weight gradients (about
    3 x D floats per token more activation memory per block than the one 2D pair).
    """
    if _mix_form_fits(layers):
        mixes = shift_mixes(s, mus)  # (B', M, D) each, real
        return [nn.functional.linear(mix, layer.weight) for layer, mix in zip(layers, mixes)]
    pair = spike_pair(s)  # (B', M, 2D) spikes
    return [layer(pair, mu) for layer, mu in zip(layers, mus)]


class SpikeDrivenTimeMixing(TimeMixingBase):
    """RWKV-4 time mixing on spikes ``s`` (docs/spike-driven.md, Eq. SD-3, SD-4):
    k, v, r = TokenShiftLinear([s_n, s_{n-1}]); o = W_o(LIF(LN(sigmoid(r) * wkv(k, v))))."""

    def __init__(self, config: SDiTConfig, layer_id: int, num_layers: int) -> None:
        super().__init__(config, layer_id, num_layers)
        dim = config.hidden_size
        self.key = TokenShiftLinear(dim, dim, bias=False)
        self.value = TokenShiftLinear(dim, dim, bias=False)
        self.receptance = TokenShiftLinear(dim, dim, bias=False)
        self.output = nn.Linear(dim, dim, bias=False)
        self.wkv = WKV()
        self.time_steps = config.time_steps
        self.out_norm = nn.LayerNorm(dim)
        self.out_lif = make_lif(config)

    def forward(self, s: Tensor) -> Tensor:
        layers = (self.key, self.value, self.receptance)
        k, v, r = shift_linears(s, layers, (self.mu_k, self.mu_v, self.mu_r))  # Eq. SD-3, (T*B, M, D) each
        g = sigmoid_gate(r, self.wkv(self.time_decay, self.time_first, k, v))  # (T*B, M, D), real
        return self.output(run_lif(self.out_lif, self.out_norm(g), self.time_steps))  # Eq. SD-4


class SpikeDrivenChannelMixing(ChannelMixingBase):
    """RWKV-4 channel mixing on spikes ``s``, its hidden nonlinearity a LIF (docs/spike-driven.md,
    Eq. SD-5): o = sigmoid(r) * W_v(LIF(LN(k))), k, r from TokenShiftLinear([s_n, s_{n-1}])."""

    def __init__(self, config: SDiTConfig, layer_id: int, num_layers: int) -> None:
        super().__init__(config, layer_id, num_layers)
        dim, hidden = config.hidden_size, config.ffn_ratio * config.hidden_size
        self.key = TokenShiftLinear(dim, hidden, bias=False)
        self.value = nn.Linear(hidden, dim, bias=False)
        self.receptance = TokenShiftLinear(dim, dim, bias=False)
        self.time_steps = config.time_steps
        self.hidden_norm = nn.LayerNorm(hidden)
        self.hidden_lif = make_lif(config)

    def forward(self, s: Tensor) -> Tensor:
        # Eq. SD-3: k (T*B, M, 4D), r (T*B, M, D)
        k, r = shift_linears(s, (self.key, self.receptance), (self.mu_k, self.mu_r))
        k = run_lif(self.hidden_lif, self.hidden_norm(k), self.time_steps)  # (T*B, M, 4D) spikes
        return sigmoid_gate(r, self.value(k))  # Eq. SD-5, (T*B, M, D)


class SpikeDrivenBlock(BlockBase):
    """The spike-driven Spiking Transformer Block, docs/spike-driven.md Eq. SD-1 to SD-7."""

    time_mixing_class = SpikeDrivenTimeMixing
    channel_mixing_class = SpikeDrivenChannelMixing

    def _skip_inputs(self, config: SDiTConfig) -> None:
        self.skip_norm = nn.LayerNorm(2 * config.hidden_size)
        self.skip_lif = make_lif(config)

    def _recon_inputs(self, config: SDiTConfig) -> None:
        self.recon_norm = nn.LayerNorm(config.hidden_size)
        self.recon_lif = make_lif(config)
        self.recon_mid_norm = nn.LayerNorm(config.num_tokens)
        self.recon_mid_lif = make_lif(config)

    def forward(self, h: Tensor, skip: Tensor | None = None) -> Tensor:
        if self.skip_linear is not None:
            if skip is None:
                raise ValueError("an output block needs the skip of its input block")
            spikes = self._spike(self.skip_lif, self.skip_norm(torch.cat([h, skip], dim=-1)))  # (T*B, N, 2D)
            h = h + self.skip_linear(spikes)  # Eq. SD-1, (T*B, N, D)
        tokens = h.shape[1]
        x = self._append_recon_token(h)  # Eq. 6, (T*B, M, D)
        x = x + self.time_mixing(self._spike(self.attn_lif, self.ln1(x)))  # Eq. SD-2
        x = x + self.channel_mixing(self._spike(self.ffn_lif, self.ln2(x)))  # Eq. SD-2
        if self.recon_token is None:
            return x
        y, z = x[:, :tokens], x[:, tokens:]  # Eq. 10, (T*B, N, D) each
        z_d = self.recon_d(self._spike(self.recon_lif, self.recon_norm(z)))  # Eq. SD-6, (T*B, N, N)
        spikes = self._spike(self.recon_mid_lif, self.recon_mid_norm(z_d))  # (T*B, N, N)
        z_n = self.recon_n(spikes.transpose(1, 2))  # Eq. SD-6, (T*B, N, D)
        return torch.addcmul(y, z_n, y)  # Eq. SD-7 = Eq. 13: y + z_n * y
