"""Typed, frozen model configs and the named presets.

Every preset is a value in :data:`PRESETS`; nothing branches on preset names.
Shapes follow docs/design.md §1: images are ``image_size x image_size`` with
``in_channels`` channels, cut into ``L = (image_size / patch_size) ** 2``
patches; SDiT prepends one time token, so ``N = L + 1``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_type_hints


@dataclass(frozen=True)
class SDiTConfig:
    """The Spiking Diffusion Transformer (paper §III, docs/design.md §1).

    Attributes:
        image_size: Side of the square input image in pixels.
        in_channels: Image channels C (1 for (Fashion-)MNIST, 3 for CIFAR-10).
        patch_size: Patch side p; ``image_size`` must be divisible by it.
        hidden_size: Feature dimension D.
        depth_in: Number of input blocks (each pushes a U-ViT skip).
        depth_mid: Number of mid blocks.
        depth_out: Number of output blocks (each pops a skip, Eq. 4-5).
        time_steps: Spiking time steps T of the direct encoding.
        freq_dim: Width of the sinusoidal timestep features fed to the time MLP.
        reconstruction: Use the Reconstruction Token and Module (Eq. 6, 10-13);
            ``False`` is the Table II ablation.
        tau: LIF membrane time constant.
        v_threshold: LIF firing threshold.
        ffn_ratio: Hidden width of ChannelMixing as a multiple of D (RWKV-4: 4).
        num_classes: K > 0 makes the model class-conditional as the authors' code is: a label table of
            K rows (plus a null row K when ``class_dropout`` > 0) whose embedding is added to the time
            embedding in the prepended condition token. 0: time only (the paper's text).
        class_dropout: Probability that a training label is replaced by the null class K (authors: 0.1).
        learn_sigma: Predict 2C channels, the noise and the learned-range variance interpolation v
            (IDDPM; the authors' code), instead of C.
        time_encoding: How the T spiking steps enter. ``"stream"``: direct encoding, the residual stream
            is repeated over T and every layer runs T times, the decoder averages over T (our reading of
            the paper). ``"branch"``: the authors' code; the stream has no time axis, each mixing branch
            runs once and its real-valued output is copied to T identical steps for its LIF, whose spikes
            are averaged back, so the residual stream receives firing rates.
        norm_affine: LayerNorms with a learned scale and shift (False in the authors' code).
        norm_eps: LayerNorm epsilon (authors: 1e-6; PyTorch default 1e-5).
        recon_bias: Biases on W_D and W_N of the Reconstruction Module (authors' code: yes; Eq. 11-12: no).
        init: Initialisation: ``"sdit"`` (ours) or ``"authors"`` (docs/authors-layout.md §4: zero position
            table, all-ones reconstruction tokens, the authors' RWKV ramps and layer ids, Xavier Linears,
            zero final layer). Only training from scratch depends on it.
        spike_driven: Spike-driven blocks (docs/spike-driven.md): a LIF neuron at the head of
            every branch instead of its tail (the "membrane shortcut" of Spike-driven Transformer
            v1/v2), so every Linear inside a block reads binary spikes; ``False`` is the paper's
            block (Eq. 7-8), where every Linear reads a LayerNorm of the real-valued stream.
    """

    image_size: int = 28
    in_channels: int = 1
    patch_size: int = 2
    hidden_size: int = 384
    depth_in: int = 2
    depth_mid: int = 1
    depth_out: int = 2
    time_steps: int = 4
    freq_dim: int = 256
    reconstruction: bool = True
    tau: float = 2.0
    v_threshold: float = 1.0
    ffn_ratio: int = 4
    num_classes: int = 0
    class_dropout: float = 0.0
    learn_sigma: bool = False
    time_encoding: Literal["stream", "branch"] = "stream"
    norm_affine: bool = True
    norm_eps: float = 1e-5
    recon_bias: bool = False
    init: Literal["sdit", "authors"] = "sdit"
    spike_driven: bool = False
    kind: Literal["sdit"] = "sdit"

    def __post_init__(self) -> None:
        _check_patching(self.image_size, self.patch_size)
        if self.depth_in != self.depth_out:
            raise ValueError(
                f"depth_in ({self.depth_in}) must equal depth_out ({self.depth_out}): "
                "every output block pops one input block's skip"
            )
        if self.time_steps < 1:
            raise ValueError(f"time_steps must be >= 1, got {self.time_steps}")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {self.num_classes}")
        if not 0.0 <= self.class_dropout < 1.0 or (self.class_dropout and not self.num_classes):
            raise ValueError(f"class_dropout must be in [0, 1) and needs num_classes > 0, got {self.class_dropout}")
        if self.time_encoding not in ("stream", "branch"):
            raise ValueError(f"time_encoding must be 'stream' or 'branch', got {self.time_encoding!r}")
        if self.init not in ("sdit", "authors"):
            raise ValueError(f"init must be 'sdit' or 'authors', got {self.init!r}")
        if self.init == "authors" and self.depth_in + self.depth_out < 2:
            raise ValueError("the authors' init ramps divide by depth_in + depth_out - 1; it must be >= 1")
        if self.spike_driven and self.time_encoding != "stream":
            raise ValueError("spike_driven blocks run every layer over T: they need time_encoding 'stream'")

    @property
    def num_patches(self) -> int:
        """L, the number of image patches."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        """N = L + 1: the patches plus the prepended time (condition) token."""
        return self.num_patches + 1

    @property
    def out_channels(self) -> int:
        """Channels of the prediction: C (noise), or 2C with ``learn_sigma`` (noise, variance interpolation)."""
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    @property
    def label_rows(self) -> int:
        """Rows of the label table: K, plus the null class K when labels are dropped in training; 0 without."""
        if not self.num_classes:
            return 0
        return self.num_classes + (1 if self.class_dropout > 0 else 0)


@dataclass(frozen=True)
class DiTConfig:
    """The DiT ANN baseline (Peebles & Xie; docs/design.md §3).

    Attributes:
        image_size: Side of the square input image in pixels.
        in_channels: Image channels C.
        patch_size: Patch side p.
        hidden_size: Feature dimension D.
        depth: Number of adaLN-Zero blocks.
        num_heads: Attention heads; must divide ``hidden_size``.
        mlp_ratio: MLP hidden width as a multiple of D.
        freq_dim: Width of the sinusoidal timestep features.
        weight_bits: 32 (float) or 2..8: every Linear then holds integer weights of this width
            (post-training quantization, :mod:`sdit.models.quant`; such a model is made, not trained).
        activation_bits: 32 (float) or 2..8: the width every Linear's input is quantized to.
    """

    image_size: int = 28
    in_channels: int = 1
    patch_size: int = 2
    hidden_size: int = 384
    depth: int = 5
    num_heads: int = 6
    mlp_ratio: int = 4
    freq_dim: int = 256
    weight_bits: int = 32
    activation_bits: int = 32
    kind: Literal["dit"] = "dit"

    def __post_init__(self) -> None:
        _check_patching(self.image_size, self.patch_size)
        widths = (self.weight_bits, self.activation_bits)
        if widths != (32, 32) and not all(2 <= b <= 8 for b in widths):
            raise ValueError(f"weight_bits and activation_bits must both be 32 (float) or both lie in 2..8, "
                             f"got {self.weight_bits} and {self.activation_bits}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must divide hidden_size ({self.hidden_size})"
            )

    @property
    def quantized(self) -> bool:
        """Whether the Linears hold integers (post-training quantized)."""
        return self.weight_bits != 32

    @property
    def num_patches(self) -> int:
        """L, the number of image patches (DiT has no time token)."""
        return (self.image_size // self.patch_size) ** 2


ModelConfig = SDiTConfig | DiTConfig


def _check_patching(image_size: int, patch_size: int) -> None:
    if patch_size < 1 or image_size % patch_size:
        raise ValueError(f"patch_size {patch_size} does not divide image_size {image_size}")


# The authors' code (foolLain/SDiT, docs/authors-layout.md): what differs from our reading of the paper, as choices.
AUTHORS_LAYOUT: dict[str, Any] = dict(
    in_channels=3, num_classes=10, class_dropout=0.1, learn_sigma=True, time_encoding="branch",
    norm_affine=False, norm_eps=1e-6, recon_bias=True, init="authors",
)

PRESETS: dict[str, ModelConfig] = {
    "sdit-mnist": SDiTConfig(),
    "sdit-cifar": SDiTConfig(in_channels=3, hidden_size=512, depth_in=4, depth_out=4),
    "dit-mnist": DiTConfig(),
    "dit-cifar": DiTConfig(in_channels=3, hidden_size=512, depth=9, num_heads=8),
    "sdit-small": SDiTConfig(patch_size=4, hidden_size=128, depth_in=1, depth_mid=1, depth_out=1),
    "dit-small": DiTConfig(patch_size=4, hidden_size=128, depth=3, num_heads=4),
    "dit-small-int8": DiTConfig(patch_size=4, hidden_size=128, depth=3, num_heads=4, weight_bits=8, activation_bits=8),
    "dit-small-w4a3": DiTConfig(patch_size=4, hidden_size=128, depth=3, num_heads=4, weight_bits=4, activation_bits=3),
    "sdit-small-norecon": SDiTConfig(
        patch_size=4, hidden_size=128, depth_in=1, depth_mid=1, depth_out=1, reconstruction=False
    ),
    "sdit-small-sd": SDiTConfig(
        patch_size=4, hidden_size=128, depth_in=1, depth_mid=1, depth_out=1, spike_driven=True
    ),
    "sdit-mnist-sd": SDiTConfig(spike_driven=True),
    "sdit-tiny": SDiTConfig(patch_size=7, hidden_size=32, depth_in=1, depth_mid=1, depth_out=1),
    "sdit-tiny-norecon": SDiTConfig(
        patch_size=7, hidden_size=32, depth_in=1, depth_mid=1, depth_out=1, reconstruction=False
    ),
    "sdit-tiny-sd": SDiTConfig(patch_size=7, hidden_size=32, depth_in=1, depth_mid=1, depth_out=1, spike_driven=True),
    "dit-tiny": DiTConfig(patch_size=7, hidden_size=32, depth=2, num_heads=2),
    "sdit-mnist-authors": SDiTConfig(**AUTHORS_LAYOUT),
    "sdit-cifar-authors": SDiTConfig(hidden_size=512, depth_in=4, depth_out=4, **AUTHORS_LAYOUT),
    "sdit-tiny-authors": SDiTConfig(
        patch_size=7, hidden_size=32, depth_in=1, depth_mid=1, depth_out=1, **AUTHORS_LAYOUT
    ),
}

# What each preset is, and which of the paper's unstated choices give its size (``sdit info`` prints these).
PRESET_NOTES: dict[str, str] = {
    "sdit-mnist": (
        "Paper, MNIST and Fashion-MNIST (§IV-A: 2 input / 1 mid / 2 output blocks, D = 384, T = 4). The paper "
        "leaves p and the time embedding open; p = 2 and a DiT-style time MLP (sinusoid(256) -> Linear -> SiLU "
        "-> Linear) give 11,657,486 trainable parameters, 0.11 % under Table III's 11.67 M. A U-ViT time token "
        "without the MLP would give 11,410,958 (-2.2 %), p = 4 would give 10,763,546 (-7.8 %): Table III rules "
        "both out. W_D and W_N are bias-free, as Eq. 11-12 write them."
    ),
    "sdit-cifar": "Paper, CIFAR-10 resized to 28x28 (§IV-A: 4 / 1 / 4 blocks, D = 512), choices as sdit-mnist.",
    "dit-mnist": (
        "DiT baseline at the sdit-mnist size (Table III): p = 2, D = 384, 5 blocks, 6 heads, MLP 4D, no class "
        "embedding, noise-only output (no learned sigma): 13,845,508 trainable parameters, 0.10 % under "
        "Table III's 13.86 M; the frozen sin-cos position table adds 75,264 non-trainable ones."
    ),
    "dit-cifar": "DiT baseline for CIFAR-10 at 28x28: p = 2, D = 512, 9 blocks, 8 heads (our choice).",
    "sdit-small": "CPU preset: SDiT with p = 4 (50 tokens), D = 128, 1 / 1 / 1 blocks, T = 4.",
    "dit-small": "CPU preset: DiT with p = 4 (49 tokens), D = 128, 3 blocks, 4 heads.",
    "dit-small-int8": (
        "dit-small with every Linear at int8 weights (per channel) and int8 inputs (per layer), integer matrix "
        "products; made from trained dit-small weights by `sdit quantize`, not trained."
    ),
    "dit-small-w4a3": (
        "dit-small with 4-bit weights and 3-bit Linear inputs (3 = ceil(log2(T + 1)) for an SNN's T = 4 steps); "
        "made by `sdit quantize`, not trained."
    ),
    "sdit-small-norecon": (
        "CPU preset: sdit-small without the Reconstruction Token and Module (the Table II ablation at small "
        "size; trained with sdit-small's recipe)."
    ),
    "sdit-small-sd": (
        "CPU preset: sdit-small with spike-driven blocks (docs/spike-driven.md): a LIF at the head of every "
        "branch, the residual stream real, so every Linear inside a block (time and channel mixing, skip, "
        "W_D / W_N) reads binary spikes; the WKV recurrence still reads real k, v. Adds LayerNorms in front of "
        "the inner neurons: 799,430 trainable parameters (sdit-small: 794,010)."
    ),
    "sdit-mnist-sd": (
        "sdit-mnist with spike-driven blocks (docs/spike-driven.md), our design, not the paper's: "
        "11,685,568 trainable parameters (sdit-mnist plus 28,082 for the LayerNorms in front of the inner neurons)."
    ),
    "sdit-tiny": "Test preset: p = 7 (16 patches), D = 32, 1 / 1 / 1 blocks.",
    "sdit-tiny-norecon": "Test preset: sdit-tiny without the Reconstruction Module (Table II ablation).",
    "sdit-tiny-sd": "Test preset: sdit-tiny with spike-driven blocks (docs/spike-driven.md).",
    "dit-tiny": "Test preset: p = 7, D = 32, 2 blocks, 2 heads.",
    "sdit-mnist-authors": (
        "SDiT as the authors' code (foolLain/SDiT) builds it for MNIST / Fashion-MNIST (docs/authors-layout.md): "
        "depth 4 = 2 / 1 / 2 blocks, D = 384, p = 2, 3 input channels (grey repeated), class-conditional "
        "(t_emb + label embedding as one prepended token, 10 classes + a null row, label dropout 0.1), learned "
        "zero-initialised position table, N + 1 reconstruction tokens per block initialised to ones, W_D / W_N "
        "with biases, LayerNorm without affine (eps 1e-6), 6 output channels (noise + learned variance). "
        "Each mixing branch runs once; its real output is copied to T = 4 steps for the LIF and the spikes "
        "are averaged, so MACs are not multiplied by T and no synaptic layer reads spikes. 11,667,259 "
        "trainable parameters: Table III's 11.67 M to the digit. Loads the authors' .pt checkpoints."
    ),
    "sdit-cifar-authors": (
        "SDiT as the authors' code builds it for CIFAR-10 resized to 28x28: depth 8 = 4 / 1 / 4 blocks, "
        "D = 512, otherwise as sdit-mnist-authors; 36,052,047 trainable parameters."
    ),
    "sdit-tiny-authors": (
        "Test preset: the authors' layout at p = 7, D = 32, depth 2 = 1 / 1 / 1 blocks, the configuration of "
        "the authors'-code fixture (tests/data/authors-sdit); 72,675 trainable parameters."
    ),
}


class UnknownPresetError(KeyError):
    """Raised for a preset name that is not in :data:`PRESETS`."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"unknown preset {self.name!r}; valid presets: {', '.join(PRESETS)}"


def get_preset(name: str) -> ModelConfig:
    """Return the config registered under ``name``.

    Raises:
        UnknownPresetError: ``name`` is not a preset; the message lists the valid ones.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise UnknownPresetError(name) from None


def config_to_dict(config: ModelConfig) -> dict[str, Any]:
    """A JSON-ready dict of a config, with its ``kind``."""
    return asdict(config)


def config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Inverse of :func:`config_to_dict`; unknown keys are an error, not ignored.

    A config read from a file is checked before it builds anything: every value has its field's type
    (an int is not a bool, a float is finite) and lies in :data:`CONFIG_LIMITS`.

    Raises:
        ValueError: one line naming the first offending key.
    """
    if not isinstance(data, dict):
        raise ValueError(f"config must be a JSON object, got {type(data).__name__}")
    kinds: dict[str, type[SDiTConfig] | type[DiTConfig]] = {"sdit": SDiTConfig, "dit": DiTConfig}
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in kinds:
        raise ValueError(f"config kind must be one of {sorted(kinds)}, got {kind!r}")
    cls = kinds[kind]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {kind} config keys: {', '.join(str(k) for k in unknown)[:200]}")
    check_config_values(cls, data)
    hints = get_type_hints(cls)
    # JSON writes 1.0 as 1 in some tools: a whole number in a float field is that float (spikingjelly
    # asserts float thresholds), so a config built from a file equals the one that was saved.
    return cls(**{k: float(v) if hints.get(k) is float else v for k, v in data.items()})


# The ranges a config read from a file must fall in: wide enough for every preset and any plausible
# experiment at these image sizes, narrow enough that a hostile header cannot describe an unbounded model.
# A field missing here (a new one) gets its type checked, and a number must be finite.
CONFIG_LIMITS: dict[str, tuple[float, float]] = {
    "image_size": (1, 1024),
    "in_channels": (1, 64),
    "patch_size": (1, 1024),
    "hidden_size": (1, 16384),
    "depth_in": (1, 128),
    "depth_mid": (1, 128),
    "depth_out": (1, 128),
    "depth": (1, 256),
    "time_steps": (1, 64),
    "freq_dim": (2, 16384),
    "tau": (1.0 + 1e-6, 1e4),  # spikingjelly's LIF needs tau > 1
    "v_threshold": (1e-6, 1e4),
    "ffn_ratio": (1, 64),
    "num_heads": (1, 1024),
    "mlp_ratio": (1, 64),
    "weight_bits": (2, 32),
    "activation_bits": (2, 32),
}


def check_config_values(cls: type[SDiTConfig] | type[DiTConfig], data: dict[str, Any]) -> None:
    """Types (from the dataclass annotations) and :data:`CONFIG_LIMITS` of the values in ``data``.

    Raises:
        ValueError: one line, ``config key: why``.
    """
    hints = get_type_hints(cls)
    for key, value in data.items():
        expected = hints.get(key)
        if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"config {key} must be an integer, got {_short(value)}")
        if expected is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"config {key} must be a number, got {_short(value)}")
            if not math.isfinite(value):
                raise ValueError(f"config {key} must be finite, got {value}")
        if expected is bool and not isinstance(value, bool):
            raise ValueError(f"config {key} must be true or false, got {_short(value)}")
        if expected is str and not isinstance(value, str):
            raise ValueError(f"config {key} must be a string, got {_short(value)}")
        if key in CONFIG_LIMITS and isinstance(value, (int, float)) and not isinstance(value, bool):
            low, high = CONFIG_LIMITS[key]
            if not low <= value <= high:
                raise ValueError(f"config {key} = {value} is outside [{low:g}, {high:g}]")


def _short(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"
