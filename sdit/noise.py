"""The noise of a set of images: image ``i`` (its index in the set, 0..N-1) has a generator of its own.

Image ``i``'s generator is seeded with :func:`image_seed` of the run's seed and ``i``; its initial noise and
every stochastic step's noise come from that generator alone. So an image depends on the seed and its index
only: not on the batch size, on the batch it falls in, nor on how many processes draw the set. Every sampler
run draws its noise this way (:func:`sdit.diffusion.run_steps`): the images a profile counts are the first
images ``sdit sample`` and ``sdit evaluate`` draw with the same seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

NOISE = "per image"  # a sampler record's ``noise``: image i's generator seeded with image_seed(seed, i)
_MASK64 = 2**64 - 1


def _splitmix64(value: int) -> int:
    """The SplitMix64 output function (Steele, Lea and Flood 2014): a bijection of 64-bit integers."""
    z = (value + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def image_seed(seed: int, index: int) -> int:
    """The seed of image ``index``'s generator: ``(splitmix64(seed) + index) mod 2**64``.

    The CPU generator (a Mersenne Twister) reads the low 32 bits of a seed, CUDA's Philox all 64: both
    differ for every image of a set under 2**32 images, and sets of different seeds start at unrelated
    offsets.
    """
    if index < 0:
        raise ValueError(f"image index must be >= 0, got {index}")
    return (_splitmix64(seed & _MASK64) + index) & _MASK64


class ImageNoise:
    """Noise of a batch drawn image by image: row k from the generator of image ``indices[k]``.

    A sampler takes it as its ``noise``: it gives the initial noise and every step's noise.
    """

    def __init__(self, seed: int, indices: Sequence[int], device: torch.device | str = "cpu") -> None:
        self.indices = list(indices)
        self.generators = [torch.Generator(device=device).manual_seed(image_seed(seed, i)) for i in self.indices]

    def randn(self, shape: Sequence[int], device: torch.device | str, dtype: torch.dtype | None = None) -> Tensor:
        """(B, ...) standard normal noise, row k drawn from image k's generator."""
        if shape[0] != len(self.generators):
            raise ValueError(f"noise for {shape[0]} images asked of the generators of {len(self.generators)}")
        return torch.stack([torch.randn(tuple(shape[1:]), device=device, dtype=dtype, generator=g)
                            for g in self.generators])

    def like(self, x: Tensor) -> Tensor:
        """Noise shaped, placed and typed as ``x``."""
        return self.randn(x.shape, x.device, x.dtype)


def standard_normal_like(x: Tensor, noise: ImageNoise | None) -> Tensor:
    """``noise.like(x)``, or from torch's global generator when no noise is given (a sampler run alone)."""
    return torch.randn_like(x) if noise is None else noise.like(x)
