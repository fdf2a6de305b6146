"""Post-training quantization of DiT's Linear layers: integer weights and activations, integer matrix products.

A :class:`QuantLinear` holds its weight as signed integers of ``weight_bits`` (symmetric, one scale per output
channel) and quantizes its input to signed integers of ``activation_bits`` (symmetric, one scale per layer,
fixed by calibration). The product of the two integer matrices runs in ``torch._int_mm`` (int8 x int8 -> int32,
a real integer kernel on CPU), then one float multiply rescales it and the float bias is added. Values of fewer
than 8 bits ride in int8 containers through the same kernel: the arithmetic is exact for them, the speed is
int8's.

What stays float32: the patch embedding (Conv2d), LayerNorm, adaLN's modulation, GELU, SiLU, softmax and the two
attention products (q k^T and attention x v), and every bias. The profiler counts each product at the precision
it ran in (``sdit.models.quant.precision_of``).

Calibration (:func:`calibrate`) runs the float model on noisy training images and chooses each activation scale
and each low-bit weight scale by the least squared quantization error over a grid of clipping levels (8-bit
weights take the per-channel maximum).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

FLOAT_BITS = 32  # a config's "not quantized"
_CLIP_GRID = torch.linspace(0.2, 1.0, 81)  # fractions of the largest magnitude tried as clipping levels
_SAMPLES_PER_BATCH = 1 << 15  # activation values kept per layer and calibration batch (plus the exact maximum)


def qmax(bits: int) -> int:
    """Largest magnitude of a symmetric signed integer of ``bits`` bits (-qmax..qmax; 8 bits: 127)."""
    return 2 ** (bits - 1) - 1


def quantize_to_int(x: Tensor, scale: Tensor, bits: int) -> Tensor:
    """``round(x / scale)`` clamped to ±qmax(bits), as int8."""
    q = qmax(bits)
    return torch.clamp(torch.round(x / scale), -q, q).to(torch.int8)


class QuantLinear(nn.Module):
    """``y = (q_x q_W^T) * s_x * s_W + b``: a Linear with integer weights and inputs, integer product.

    Tensors: ``weight`` (out, in) int8 holding ``weight_bits``-bit values (a frozen parameter, so parameter
    counts stay those of the float model), ``weight_scale`` (out,), ``input_scale`` (), ``bias`` (out,) float32.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool, weight_bits: int, activation_bits: int):
        super().__init__()
        if not (2 <= weight_bits <= 8 and 2 <= activation_bits <= 8):
            raise ValueError(f"integer widths must lie in 2..8 bits, got W{weight_bits}A{activation_bits}")
        self.in_features, self.out_features = in_features, out_features
        self.weight_bits, self.activation_bits = weight_bits, activation_bits
        self.weight = nn.Parameter(torch.zeros(out_features, in_features, dtype=torch.int8), requires_grad=False)
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.register_buffer("input_scale", torch.ones(()))
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None

    @property
    def precision(self) -> str:
        """The arithmetic of its product, as the profiler reads it: ``int8`` (W8A8), else ``w<W>a<A>``."""
        return precision_of(self)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"W{self.weight_bits}A{self.activation_bits}")

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        xq = quantize_to_int(x.reshape(-1, self.in_features), self.input_scale, self.activation_bits)
        acc = torch._int_mm(xq, self.weight.t())  # (M, out) int32, exact
        y = acc.to(x.dtype) * (self.input_scale * self.weight_scale).to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y.reshape(*lead, self.out_features)


def replace_linears(model: nn.Module, weight_bits: int, activation_bits: int) -> nn.Module:
    """Swap every ``nn.Linear`` of ``model`` for an empty :class:`QuantLinear` of its shape, in place."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, child_name, QuantLinear(child.in_features, child.out_features,
                                                        child.bias is not None, weight_bits, activation_bits))
    return model


def precision_of(module: nn.Module) -> str:
    """The arithmetic a module's products run in: ``int8`` (W8A8), ``w4a3`` and so on, else ``fp32``."""
    if isinstance(module, QuantLinear):
        if module.weight_bits == module.activation_bits == 8:
            return "int8"
        return f"w{module.weight_bits}a{module.activation_bits}"
    return "fp32"


def _best_clip(values: Tensor, peak: Tensor, bits: int) -> Tensor:
    """Clipping level(s) among ``_CLIP_GRID * peak`` with the least squared quantization error of ``values``.

    ``values`` (..., n) and ``peak`` (...,): one level per leading index.
    """
    q = qmax(bits)
    levels = _CLIP_GRID.to(values.dtype)[:, None] * peak.reshape(1, -1)  # (G, K)
    levels = torch.where(levels > 0, levels, torch.ones_like(levels))
    v = values.reshape(1, levels.shape[1], -1)  # (1, K, n)
    scale = (levels / q)[..., None]  # (G, K, 1)
    err = ((torch.clamp(torch.round(v / scale), -q, q) * scale - v) ** 2).sum(-1)  # (G, K)
    return levels.gather(0, err.argmin(0, keepdim=True))[0].reshape(peak.shape)


def weight_scales(weight: Tensor, bits: int) -> Tensor:
    """Per-output-channel scales of a float weight (out, in): max |w| / qmax at 8 bits, least error below."""
    peak = weight.abs().amax(dim=1)
    clip = peak if bits == 8 else _best_clip(weight, peak, bits)
    return torch.where(clip > 0, clip, torch.ones_like(clip)) / qmax(bits)


@torch.no_grad()
def calibrate(float_model: nn.Module, quant_model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]],
              seed: int = 0) -> int:
    """Fill ``quant_model`` (built by :func:`replace_linears` on the same architecture) from ``float_model``.

    Weights are quantized per output channel; each Linear's input scale is chosen from the inputs it saw while
    ``float_model`` ran on ``batches`` (``(x_t, t)`` pairs): the clipping level of least squared error over a
    random sample of those inputs (and their exact maximum). Returns the number of images seen.
    """
    linears = {name: m for name, m in float_model.named_modules() if isinstance(m, nn.Linear)}
    quants = {name: m for name, m in quant_model.named_modules() if isinstance(m, QuantLinear)}
    if linears.keys() != quants.keys():
        raise ValueError("calibrate: the two models do not have the same Linear layers")
    generator = torch.Generator().manual_seed(seed)
    seen: dict[str, list[Tensor]] = {name: [] for name in linears}
    peaks: dict[str, Tensor] = {name: torch.zeros(()) for name in linears}

    def keep(name: str):
        def hook(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
            x = args[0].detach().reshape(-1).float()
            peaks[name] = torch.maximum(peaks[name], x.abs().max())
            if x.numel() > _SAMPLES_PER_BATCH:
                x = x[torch.randint(x.numel(), (_SAMPLES_PER_BATCH,), generator=generator)]
            seen[name].append(x)
        return hook

    handles = [m.register_forward_pre_hook(keep(name)) for name, m in linears.items()]
    images = 0
    try:
        float_model.eval()
        for x, t in batches:
            float_model(x, t)
            images += len(x)
    finally:
        for handle in handles:
            handle.remove()
    if images == 0:
        raise ValueError("calibrate: no calibration images")
    for name, linear in linears.items():
        quant = quants[name]
        w_scale = weight_scales(linear.weight.float(), quant.weight_bits)
        quant.weight.copy_(quantize_to_int(linear.weight.float(), w_scale[:, None], quant.weight_bits))
        quant.weight_scale.copy_(w_scale)
        values = torch.cat(seen[name])
        clip = _best_clip(values[None], peaks[name].reshape(1), quant.activation_bits)[0]
        quant.input_scale.copy_(torch.where(clip > 0, clip, torch.ones_like(clip)) / qmax(quant.activation_bits))
        if quant.bias is not None:
            quant.bias.copy_(linear.bias.float())
    for name, param in float_model.state_dict().items():  # everything that is not a Linear: copied as is
        owner = name.rsplit(".", 1)[0]
        if owner not in linears:
            quant_model.state_dict()[name].copy_(param)
    return images
