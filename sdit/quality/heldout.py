"""Held-out epsilon error: the training loss of a diffusion model on real test images, per timestep.

The number the shipped checkpoints' provenance and the spike-driven comparison report: for
fixed test images x_0, noise eps drawn once from ``seed`` and a timestep t, the mean of
(eps_theta(x_t, t) - eps)^2 over pixels and images (DDPM Eq. 14 at that t).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sdit.diffusion import Diffusion

HELD_OUT_T = (250, 500, 750, 900, 999)  # timesteps reported everywhere (t = 999: pure noise)


@torch.no_grad()
def held_out_eps_mse(model: nn.Module, images: Tensor, timesteps: Sequence[int] = HELD_OUT_T,
                     seed: int = 0) -> dict[str, float]:
    """Epsilon-MSE of ``model`` on ``images`` (N, C, H, W) at each timestep, one noise draw from ``seed``.

    Returns:
        ``{str(t): mse}`` in the order of ``timesteps`` (string keys: JSON-ready).
    """
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    diffusion = Diffusion()
    model.eval()
    return {str(t): diffusion.loss_at(model, images, torch.full((images.shape[0],), t), noise).item()
            for t in timesteps}
