"""Typed, frozen model configs and the named presets.

Every preset is a value in :data:`PRESETS`; nothing branches on preset names.
Shapes follow ARCHITECTURE.md §1: images are ``image_size x image_size`` with
``in_channels`` channels, cut into ``L = (image_size / patch_size) ** 2``
patches; SDiT prepends one time token, so ``N = L + 1``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal


@dataclass(frozen=True)
class SDiTConfig:
    """The Spiking Diffusion Transformer (paper §III, ARCHITECTURE.md §1).

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

    @property
    def num_patches(self) -> int:
        """L, the number of image patches."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        """N = L + 1: the patches plus the prepended time token."""
        return self.num_patches + 1


@dataclass(frozen=True)
class DiTConfig:
    """The DiT ANN baseline (Peebles & Xie; ARCHITECTURE.md §3).

    Attributes:
        image_size: Side of the square input image in pixels.
        in_channels: Image channels C.
        patch_size: Patch side p.
        hidden_size: Feature dimension D.
        depth: Number of adaLN-Zero blocks.
        num_heads: Attention heads; must divide ``hidden_size``.
        mlp_ratio: MLP hidden width as a multiple of D.
        freq_dim: Width of the sinusoidal timestep features.
    """

    image_size: int = 28
    in_channels: int = 1
    patch_size: int = 2
    hidden_size: int = 384
    depth: int = 5
    num_heads: int = 6
    mlp_ratio: int = 4
    freq_dim: int = 256
    kind: Literal["dit"] = "dit"

    def __post_init__(self) -> None:
        _check_patching(self.image_size, self.patch_size)
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must divide hidden_size ({self.hidden_size})"
            )

    @property
    def num_patches(self) -> int:
        """L, the number of image patches (DiT has no time token)."""
        return (self.image_size // self.patch_size) ** 2


ModelConfig = SDiTConfig | DiTConfig


def _check_patching(image_size: int, patch_size: int) -> None:
    if patch_size < 1 or image_size % patch_size:
        raise ValueError(f"patch_size {patch_size} does not divide image_size {image_size}")


PRESETS: dict[str, ModelConfig] = {
    "sdit-mnist": SDiTConfig(),
    "sdit-cifar": SDiTConfig(in_channels=3, hidden_size=512, depth_in=4, depth_out=4),
    "dit-mnist": DiTConfig(),
    "dit-cifar": DiTConfig(in_channels=3, hidden_size=512, depth=9, num_heads=8),
    "sdit-small": SDiTConfig(patch_size=4, hidden_size=128, depth_in=1, depth_mid=1, depth_out=1),
    "dit-small": DiTConfig(patch_size=4, hidden_size=128, depth=3, num_heads=4),
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
    """Inverse of :func:`config_to_dict`; unknown keys are an error, not ignored."""
    kinds: dict[str, type[SDiTConfig] | type[DiTConfig]] = {"sdit": SDiTConfig, "dit": DiTConfig}
    kind = data.get("kind")
    if kind not in kinds:
        raise ValueError(f"config kind must be one of {sorted(kinds)}, got {kind!r}")
    cls = kinds[kind]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {kind} config keys: {', '.join(unknown)}")
    return cls(**data)
