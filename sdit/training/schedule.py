"""The schedule of a run: its length, the learning rate of each step, and its randomness.

Randomness is a function of (seed, step), not of a stream: the data order of epoch e is ``randperm``
seeded by (seed, e), and step s draws the timesteps and noise of the whole global batch from a
generator seeded by (seed, s), each rank keeping its slice. Resuming at step s therefore continues
exactly, on any number of ranks, and W ranks see the same images, timesteps and noise as one process
would.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sdit.diffusion import Diffusion
from sdit.training.config import TrainConfig, TrainError

_MIX = 0x9E3779B97F4A7C15  # 2^64 / golden ratio, to spread (seed, counter) pairs


def run_length(config: TrainConfig, world_size: int, num_examples: int) -> tuple[int, int]:
    """``(batches_per_epoch, total_steps)`` of ``num_examples`` images in global batches over ``world_size`` ranks.

    Raises:
        TrainError: the batch does not split evenly over the ranks, or the data hold less than one batch.
    """
    if config.batch_size % world_size:
        raise TrainError(f"batch size {config.batch_size} is not divisible by {world_size} processes")
    batches_per_epoch = num_examples // config.batch_size
    if batches_per_epoch == 0:
        raise TrainError(f"{num_examples} images are fewer than one batch of {config.batch_size}")
    total_steps = config.steps if config.steps is not None else config.epochs * batches_per_epoch
    return batches_per_epoch, total_steps


def lr_at(config: TrainConfig, step: int) -> float:
    """Learning rate of update ``step + 1``: linear warm-up over ``warmup_steps``, then constant."""
    if config.warmup_steps == 0:
        return config.lr
    return config.lr * min(1.0, (step + 1) / config.warmup_steps)


def mixed_seed(seed: int, counter: int, stream: int) -> int:
    """A 63-bit seed for (seed, counter, stream); different streams never share a seed in practice."""
    value = (seed * _MIX + counter * 0xBF58476D1CE4E5B9 + stream * 0x94D049BB133111EB) % (1 << 64)
    value ^= value >> 31
    return value % (1 << 63)


def epoch_order(num_examples: int, seed: int, epoch: int) -> Tensor:
    """The data order of one epoch: a permutation of ``num_examples`` indices, (N,)."""
    g = torch.Generator().manual_seed(mixed_seed(seed, epoch, 1))
    return torch.randperm(num_examples, generator=g)


def step_noise(
    diffusion: Diffusion, seed: int, step: int, shape: tuple[int, ...]
) -> tuple[Tensor, Tensor]:
    """Timesteps (B,) and noise (B, C, H, W) of the whole global batch at ``step`` (CPU)."""
    g = torch.Generator().manual_seed(mixed_seed(seed, step, 2))
    t = torch.randint(0, diffusion.num_steps, shape[:1], generator=g)  # (B,)
    noise = torch.randn(shape, generator=g)  # (B, C, H, W)
    return t, noise
