"""The Spiking Diffusion Transformer (paper §III, ARCHITECTURE.md §1).

Shapes: B batch, T spiking steps, N = L + 1 tokens (time token + patches), D hidden.
Inside blocks activations are (T*B, M, D) with M = 2N when the Reconstruction
Token is on (M = N otherwise); each LIF neuron sees them as (T, B, M, D).

With ``time_encoding="branch"`` (the authors' code, AUTHORS-SDIT.md §3.5) the stream
has no time axis: blocks see (B, M, D) and only the LIF runs over T, on T copies of
its branch's output, (T, B, M, D), averaged back to (B, M, D).

``SDiTConfig.spike_driven`` selects the spike-driven block of docs/spike-driven.md
(a LIF at the head of every branch, so every Linear inside a block reads spikes);
the default is the paper's block (Eq. 7-8), unchanged.
"""

from __future__ import annotations

import math

import torch
from spikingjelly.activation_based import functional, neuron, surrogate
from torch import Tensor, nn

from sdit.config import SDiTConfig
from sdit.models import cpu_kernels
from sdit.models.authors_init import init_authors
from sdit.models.embed import LabelEmbedder, TimestepEmbedder, check_image, unpatchify
from sdit.models.fused import _hooked, counting, shift_mixes, token_shift
from sdit.models.lif import LIFNode
from sdit.models.wkv import WKV


class _ReluSquare(torch.autograd.Function):
    """relu(x)^2 saving relu(x), not x: backward 2 relu(x) g is two passes, and x can be freed.

    The FFN hidden activation (T*B, M, 4D) is the largest tensor of a block, so each
    pass over it counts; autograd's relu-then-pow would save two such tensors and
    spend five passes on the backward.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        r = torch.relu(x)  # (..., 4D)
        ctx.save_for_backward(r)
        return r * r

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (r,) = ctx.saved_tensors
        return torch.mul(r, grad).mul_(2.0)


class _ReluSquareKernel(torch.autograd.Function):
    """relu(x)^2 by the C kernels (CPU float32), saving x: one pass forward (relu and square together),
    one pass backward ((relu(x) g) 2, recomputing relu(x)); the same values as :class:`_ReluSquare`."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        x = x.contiguous()  # (..., 4D)
        ctx.save_for_backward(x)
        return relu_square_cpu(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return relu_square_backward_cpu(x, grad)


def _threads() -> int:
    return torch.get_num_threads()


@torch.library.custom_op("sdit::relu_square", mutates_args=())
def relu_square_cpu(x: Tensor) -> Tensor:
    """relu(x)^2 of a float32 CPU tensor, the C kernel (no autograd)."""
    x = x.contiguous()
    out = torch.empty_like(x)
    cpu_kernels.load().sdit_relu_square(cpu_kernels.ptr(x), cpu_kernels.ptr(out), x.numel(), _threads())
    return out


@relu_square_cpu.register_fake
def _(x):
    return torch.empty_like(x)


@torch.library.custom_op("sdit::relu_square_", mutates_args=("x",))
def relu_square_cpu_(x: Tensor) -> None:
    """relu(x)^2 in place on a contiguous float32 CPU tensor, the C kernel (no autograd)."""
    cpu_kernels.load().sdit_relu_square(cpu_kernels.ptr(x), cpu_kernels.ptr(x), x.numel(), _threads())


@torch.library.custom_op("sdit::relu_square_backward", mutates_args=())
def relu_square_backward_cpu(x: Tensor, grad: Tensor) -> Tensor:
    """(relu(x) grad) 2 of float32 CPU tensors of one shape, the C kernel."""
    x, grad = x.contiguous(), grad.contiguous()
    out = torch.empty_like(x)
    cpu_kernels.load().sdit_relu_square_backward(
        cpu_kernels.ptr(x), cpu_kernels.ptr(grad), cpu_kernels.ptr(out), x.numel(), _threads()
    )
    return out


@relu_square_backward_cpu.register_fake
def _(x, grad):
    return torch.empty_like(x)


def _tracked(x: Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


def _relu_square_kernel_fits(x: Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not counting()
            and not torch.compiler.is_compiling() and cpu_kernels.available())


def relu_square(x: Tensor) -> Tensor:
    """relu(x)^2, the squared-ReLU of RWKV's channel mixing; in place on ``x`` without autograd.

    Counted or compiled: tensor ops (:class:`_ReluSquare`, or ``relu_`` then ``square_``); otherwise on CPU
    float32 the C kernels, one pass each way (:class:`_ReluSquareKernel`), the same values.
    """
    if _tracked(x):
        return _ReluSquareKernel.apply(x) if _relu_square_kernel_fits(x) else _ReluSquare.apply(x)
    if _relu_square_kernel_fits(x) and x.is_contiguous():
        relu_square_cpu_(x)
        return x
    return x.relu_().square_()


def sigmoid_gate(r: Tensor, x: Tensor) -> Tensor:
    """sigmoid(r) * x; in place on ``r`` without autograd (sampling)."""
    if _tracked(r) or _tracked(x):
        return torch.sigmoid(r) * x
    return r.sigmoid_().mul_(x)


def make_lif(config: SDiTConfig) -> neuron.LIFNode:
    """A multi-step LIF layer: tau 2, threshold 1, hard reset to 0, its own ATan surrogate.

    A :class:`sdit.models.lif.LIFNode`: spikingjelly's LIFNode with a one-pass CPU kernel (same spikes).
    """
    return LIFNode(
        tau=config.tau,
        v_threshold=config.v_threshold,
        v_reset=0.0,
        surrogate_function=surrogate.ATan(),
        step_mode="m",
    )


def make_norm(config: SDiTConfig) -> nn.LayerNorm:
    """LayerNorm over D, with or without a learned scale and shift (the authors' code: without, eps 1e-6)."""
    return nn.LayerNorm(config.hidden_size, eps=config.norm_eps, elementwise_affine=config.norm_affine)


def run_lif(lif: nn.Module, x: Tensor, time_steps: int) -> Tensor:
    """Run a multi-step LIF on (T*B, ...) viewed as (T, B, ...); returns the spikes as (T*B, ...)."""
    tb = x.shape[0]
    return lif(x.view(time_steps, tb // time_steps, *x.shape[1:])).view(x.shape)  # (T, B, ...) inside


def spike_pair(s: Tensor) -> Tensor:
    """[s_n, s_{n-1}] along channels: (B', M, D) spikes -> (B', M, 2D), still binary."""
    return torch.cat([s, token_shift(s)], dim=-1)


@torch.compiler.disable
def _reset_neurons(net: nn.Module) -> None:
    """``functional.reset_net`` outside any torch.compile graph: traced, its module cache (a WeakKeyDictionary
    that the garbage collector changes at any time) became a Dynamo guard that failed to build now and then."""
    functional.reset_net(net)


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


def _mixing_linear(dim: int, out: int, spike_driven: bool) -> nn.Linear:
    return TokenShiftLinear(dim, out, bias=False) if spike_driven else nn.Linear(dim, out, bias=False)


class TimeMixing(nn.Module):
    """RWKV-4 time mixing: o = W_o(sigmoid(r) * wkv(k, v)) (Eq. 1-2).

    With ``config.spike_driven`` it reads spikes ``s`` (docs/spike-driven.md, Eq. SD-3, SD-4):
    k, v, r = TokenShiftLinear([s_n, s_{n-1}]); o = W_o(LIF(LN(sigmoid(r) * wkv(k, v)))).
    """

    def __init__(self, dim: int, layer_id: int, num_layers: int, config: SDiTConfig | None = None) -> None:
        super().__init__()
        self.spike_driven = config is not None and config.spike_driven
        ratio = layer_id / max(num_layers - 1, 1)  # 0 for the first block, 1 for the last
        channel = torch.arange(dim, dtype=torch.float32) / dim  # (D,) in [0, 1)
        # RWKV-4 initialisation: decay ramps across channels, mixing ramps with depth.
        self.time_decay = nn.Parameter(-5 + 8 * (channel * dim / max(dim - 1, 1)) ** (0.7 + 1.3 * ratio))
        self.time_first = nn.Parameter(torch.full((dim,), math.log(0.3)))
        self.mu_k = nn.Parameter(channel ** (1.0 - ratio))
        self.mu_v = nn.Parameter(channel ** (1.0 - ratio) + 0.3 * ratio)
        self.mu_r = nn.Parameter(channel ** (0.5 * (1.0 - ratio)))
        self.key = _mixing_linear(dim, dim, self.spike_driven)
        self.value = _mixing_linear(dim, dim, self.spike_driven)
        self.receptance = _mixing_linear(dim, dim, self.spike_driven)
        self.output = nn.Linear(dim, dim, bias=False)
        self.wkv = WKV()
        if self.spike_driven:
            self.time_steps = config.time_steps
            self.out_norm = nn.LayerNorm(dim)
            self.out_lif = make_lif(config)

    def forward(self, x: Tensor) -> Tensor:
        if self.spike_driven:
            return self._forward_spikes(x)
        # RWKV token-shift mixes mu * x_n + (1 - mu) * x_{n-1}, sharing x_n - x_{n-1} (sdit.models.fused).
        mix_k, mix_v, mix_r = shift_mixes(x, (self.mu_k, self.mu_v, self.mu_r))  # (B', M, D) each
        k = self.key(mix_k)  # (B', M, D)
        v = self.value(mix_v)  # (B', M, D)
        r = self.receptance(mix_r)  # (B', M, D)
        return self.output(sigmoid_gate(r, self.wkv(self.time_decay, self.time_first, k, v)))  # Eq. 2

    def _forward_spikes(self, s: Tensor) -> Tensor:
        layers = (self.key, self.value, self.receptance)
        k, v, r = shift_linears(s, layers, (self.mu_k, self.mu_v, self.mu_r))  # Eq. SD-3, (T*B, M, D) each
        g = sigmoid_gate(r, self.wkv(self.time_decay, self.time_first, k, v))  # (T*B, M, D), real
        return self.output(run_lif(self.out_lif, self.out_norm(g), self.time_steps))  # Eq. SD-4


class ChannelMixing(nn.Module):
    """RWKV-4 channel mixing: o = sigmoid(W_r x_r) * W_v(relu(W_k x_k)^2) (Eq. 3).

    With ``config.spike_driven`` it reads spikes ``s`` and the hidden nonlinearity is a LIF
    (docs/spike-driven.md, Eq. SD-5): o = sigmoid(r) * W_v(LIF(LN(k))), k, r from
    TokenShiftLinear([s_n, s_{n-1}]).
    """

    def __init__(
        self, dim: int, hidden: int, layer_id: int, num_layers: int, config: SDiTConfig | None = None
    ) -> None:
        super().__init__()
        self.spike_driven = config is not None and config.spike_driven
        ratio = layer_id / max(num_layers - 1, 1)
        channel = torch.arange(dim, dtype=torch.float32) / dim  # (D,)
        self.mu_k = nn.Parameter(channel ** (1.0 - ratio))
        self.mu_r = nn.Parameter(channel ** (1.0 - ratio))
        self.key = _mixing_linear(dim, hidden, self.spike_driven)
        self.value = nn.Linear(hidden, dim, bias=False)
        self.receptance = _mixing_linear(dim, dim, self.spike_driven)
        if self.spike_driven:
            self.time_steps = config.time_steps
            self.hidden_norm = nn.LayerNorm(hidden)
            self.hidden_lif = make_lif(config)

    def forward(self, x: Tensor) -> Tensor:
        if self.spike_driven:
            return self._forward_spikes(x)
        mix_k, mix_r = shift_mixes(x, (self.mu_k, self.mu_r))  # (B', M, D) each
        k = relu_square(self.key(mix_k))  # (B', M, 4D)
        r = self.receptance(mix_r)  # (B', M, D)
        return sigmoid_gate(r, self.value(k))  # Eq. 3, (B', M, D)

    def _forward_spikes(self, s: Tensor) -> Tensor:
        # Eq. SD-3: k (T*B, M, 4D), r (T*B, M, D)
        k, r = shift_linears(s, (self.key, self.receptance), (self.mu_k, self.mu_r))
        k = run_lif(self.hidden_lif, self.hidden_norm(k), self.time_steps)  # (T*B, M, 4D) spikes
        return sigmoid_gate(r, self.value(k))  # Eq. SD-5, (T*B, M, D)


class SpikingBlock(nn.Module):
    """Spiking Transformer Block (Fig. 2): Eq. 4-13.

    With ``config.spike_driven``, the spike-driven block of docs/spike-driven.md (Eq. SD-1 to SD-7):
    ``attn_lif`` and ``ffn_lif`` move from the tail of their branch to its head, the skip and the
    Reconstruction Module read spikes through their own LIFs, and the residual stream stays real.
    """

    def __init__(self, config: SDiTConfig, layer_id: int, num_layers: int, skip: bool) -> None:
        super().__init__()
        dim, tokens = config.hidden_size, config.num_tokens
        self.time_steps = config.time_steps
        self.time_encoding = config.time_encoding
        self.spike_driven = config.spike_driven
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None  # W_skip, Eq. 5
        if skip and self.spike_driven:
            self.skip_norm = nn.LayerNorm(2 * dim)
            self.skip_lif = make_lif(config)
        self.ln1 = make_norm(config)
        self.time_mixing = TimeMixing(dim, layer_id, num_layers, config)
        self.attn_lif = make_lif(config)
        self.ln2 = make_norm(config)
        self.channel_mixing = ChannelMixing(dim, config.ffn_ratio * dim, layer_id, num_layers, config)
        self.ffn_lif = make_lif(config)
        if config.reconstruction:
            self.recon_token = nn.Parameter(torch.zeros(1, tokens, dim))  # z, Eq. 6
            nn.init.trunc_normal_(self.recon_token, std=0.02)
            self.recon_d = nn.Linear(dim, tokens, bias=config.recon_bias)  # W_D: D x N, Eq. 11
            self.recon_n = nn.Linear(tokens, dim, bias=config.recon_bias)  # W_N: N x D, Eq. 12
            if self.spike_driven:
                self.recon_norm = nn.LayerNorm(dim)
                self.recon_lif = make_lif(config)
                self.recon_mid_norm = nn.LayerNorm(tokens)
                self.recon_mid_lif = make_lif(config)
        else:
            self.recon_token = None
            self.recon_d = None
            self.recon_n = None

    def _spike(self, lif: nn.Module, x: Tensor) -> Tensor:
        """Run a multi-step LIF on (T*B, M, D) viewed as (T, B, M, D).

        ``time_encoding="branch"``: x is (B, M, D); the LIF sees T copies of it (a constant input current)
        and its spikes are averaged over T, so the stream receives rates in {0, 1/T, ..., 1}.
        """
        if self.time_encoding == "branch":
            seq = x.unsqueeze(0).expand(self.time_steps, *x.shape)  # (T, B, M, D)
            return lif(seq).mean(0)  # (B, M, D)
        return run_lif(lif, x, self.time_steps)

    def _append_recon_token(self, h: Tensor) -> Tensor:
        """Eq. 6: the Reconstruction Token z after the stream's tokens, (T*B, N, D) -> (T*B, 2N, D); h without it."""
        if self.recon_token is None:
            return h  # (T*B, N, D)
        z = self.recon_token.expand(h.shape[0], -1, -1)  # (T*B, N, D)
        return torch.cat([h, z], dim=1)  # (T*B, 2N, D)

    def forward(self, h: Tensor, skip: Tensor | None = None) -> Tensor:
        if self.spike_driven:
            return self._forward_spikes(h, skip)
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

    def _forward_spikes(self, h: Tensor, skip: Tensor | None) -> Tensor:
        """The spike-driven block, docs/spike-driven.md Eq. SD-1 to SD-7: every Linear reads spikes."""
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
        self.in_blocks = nn.ModuleList(
            SpikingBlock(config, next(ids), num_layers, skip=False) for _ in range(config.depth_in)
        )
        self.mid_blocks = nn.ModuleList(
            SpikingBlock(config, next(ids), num_layers, skip=False) for _ in range(config.depth_mid)
        )
        self.out_blocks = nn.ModuleList(
            SpikingBlock(config, next(ids), num_layers, skip=True) for _ in range(config.depth_out)
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
