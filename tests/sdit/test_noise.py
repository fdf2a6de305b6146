"""Per-image noise: seeds, batches, and that every sampler run draws it."""

from __future__ import annotations

import pytest
import torch

from sdit import noise
from sdit.diffusion import run_steps
from sdit.models import build_model
from sdit.workload import Workload


def test_image_seeds_differ_within_a_set_in_the_bits_each_generator_reads() -> None:
    seeds = [noise.image_seed(7, i) for i in range(50_000)]
    assert len({s & 0xFFFFFFFF for s in seeds}) == 50_000  # the CPU generator reads the low 32 bits
    assert noise.image_seed(7, 3) != noise.image_seed(8, 3)
    assert all(0 <= s < 2**64 for s in seeds[:10])
    with pytest.raises(ValueError, match="index"):
        noise.image_seed(0, -1)


def test_an_images_noise_does_not_depend_on_its_batch() -> None:
    whole = noise.ImageNoise(5, range(6)).randn((6, 1, 4, 4), "cpu")
    parts = [noise.ImageNoise(5, span).randn((len(span), 1, 4, 4), "cpu") for span in (range(0, 4), range(4, 6))]
    assert torch.equal(whole, torch.cat(parts))
    assert not torch.equal(whole[0], whole[1])


def test_a_sampler_run_draws_images_0_to_b_minus_1_of_its_seed() -> None:
    model = build_model("dit-tiny").eval()
    (step,) = run_steps(model, Workload.forward(500, batch_size=3, seed=9))
    expected = noise.ImageNoise(9, range(3)).randn((3, 1, 28, 28), "cpu")
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(args[0]))
    list(run_steps(model, Workload.forward(500, batch_size=3, seed=9)))
    assert torch.equal(calls[0], expected)
    later = list(run_steps(model, Workload.forward(500, batch_size=2, seed=9), noise=noise.ImageNoise(9, range(1, 3))))
    assert torch.equal(calls[1], expected[1:])
    assert step.x.shape == (3, 1, 28, 28) and later[0].x.shape == (2, 1, 28, 28)
