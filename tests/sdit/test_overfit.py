"""A tiny SDiT and a tiny DiT must overfit one fixed batch of real Fashion-MNIST."""

from __future__ import annotations

import pytest
import torch

from sdit.diffusion import Diffusion
from sdit.models import build_model


@pytest.mark.parametrize("name", ["sdit-tiny", "dit-tiny"])
def test_loss_falls_5x_on_a_fixed_batch(name: str, fashion_test) -> None:
    torch.manual_seed(0)
    x0 = fashion_test.images[:8]  # (8, 1, 28, 28) real images in [-1, 1]
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 1000, (8,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    diffusion = Diffusion()
    model = build_model(name)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(250):
        loss = diffusion.loss_at(model, x0, t, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = losses[0], min(losses[-10:])
    assert first / last >= 5.0, f"loss only fell from {first:.4f} to {last:.4f}"
