"""What the SDiT blocks share: the squared-ReLU and gate ops, the LIF and norm factories, and the
parameters and helpers common to the paper's block (:mod:`sdit.models.sdit`) and the spike-driven one
(:mod:`sdit.models.spike_driven`).

Shapes: B batch, T spiking steps, N = L + 1 tokens (time token + patches), D hidden.
Inside blocks activations are (T*B, M, D) with M = 2N when the Reconstruction
Token is on (M = N otherwise); each LIF neuron sees them as (T, B, M, D).
"""

from __future__ import annotations

import math

import torch
from spikingjelly.activation_based import neuron, surrogate
from torch import Tensor, nn

from sdit.config import SDiTConfig
from sdit.models import cpu_kernels
from sdit.models.fused import counting
from sdit.models.lif import LIFNode


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


class TimeMixingBase(nn.Module):
    """The RWKV-4 parameters of a time mixing (decay, bonus, token-shift mixes), initialised by depth."""

    def __init__(self, config: SDiTConfig, layer_id: int, num_layers: int) -> None:
        super().__init__()
        dim = config.hidden_size
        ratio = layer_id / max(num_layers - 1, 1)  # 0 for the first block, 1 for the last
        channel = torch.arange(dim, dtype=torch.float32) / dim  # (D,) in [0, 1)
        # RWKV-4 initialisation: decay ramps across channels, mixing ramps with depth.
        self.time_decay = nn.Parameter(-5 + 8 * (channel * dim / max(dim - 1, 1)) ** (0.7 + 1.3 * ratio))
        self.time_first = nn.Parameter(torch.full((dim,), math.log(0.3)))
        self.mu_k = nn.Parameter(channel ** (1.0 - ratio))
        self.mu_v = nn.Parameter(channel ** (1.0 - ratio) + 0.3 * ratio)
        self.mu_r = nn.Parameter(channel ** (0.5 * (1.0 - ratio)))


class ChannelMixingBase(nn.Module):
    """The RWKV-4 token-shift mixes of a channel mixing, initialised by depth."""

    def __init__(self, config: SDiTConfig, layer_id: int, num_layers: int) -> None:
        super().__init__()
        dim = config.hidden_size
        ratio = layer_id / max(num_layers - 1, 1)
        channel = torch.arange(dim, dtype=torch.float32) / dim  # (D,)
        self.mu_k = nn.Parameter(channel ** (1.0 - ratio))
        self.mu_r = nn.Parameter(channel ** (1.0 - ratio))


class BlockBase(nn.Module):
    """What every Spiking Transformer Block holds (Fig. 2): the skip Linear of an output block, the two
    branches with their norms and LIFs, and the Reconstruction Module; a subclass names its mixing
    classes and adds its own modules through :meth:`_skip_inputs` and :meth:`_recon_inputs`, in that
    place of the module order (which fixes the parameter order and the initialisation's random draws).
    """

    time_mixing_class: type[nn.Module]
    channel_mixing_class: type[nn.Module]

    def __init__(self, config: SDiTConfig, layer_id: int, num_layers: int, skip: bool) -> None:
        super().__init__()
        dim, tokens = config.hidden_size, config.num_tokens
        self.time_steps = config.time_steps
        self.time_encoding = config.time_encoding
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None  # W_skip, Eq. 5
        if skip:
            self._skip_inputs(config)
        self.ln1 = make_norm(config)
        self.time_mixing = self.time_mixing_class(config, layer_id, num_layers)
        self.attn_lif = make_lif(config)
        self.ln2 = make_norm(config)
        self.channel_mixing = self.channel_mixing_class(config, layer_id, num_layers)
        self.ffn_lif = make_lif(config)
        if config.reconstruction:
            self.recon_token = nn.Parameter(torch.zeros(1, tokens, dim))  # z, Eq. 6
            nn.init.trunc_normal_(self.recon_token, std=0.02)
            self.recon_d = nn.Linear(dim, tokens, bias=config.recon_bias)  # W_D: D x N, Eq. 11
            self.recon_n = nn.Linear(tokens, dim, bias=config.recon_bias)  # W_N: N x D, Eq. 12
            self._recon_inputs(config)
        else:
            self.recon_token = None
            self.recon_d = None
            self.recon_n = None

    def _skip_inputs(self, config: SDiTConfig) -> None:
        """Modules an output block adds after its skip Linear (none by default)."""

    def _recon_inputs(self, config: SDiTConfig) -> None:
        """Modules the Reconstruction Module adds after its two Linears (none by default)."""

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
