"""Learned variance and respacing (sdit.diffusion) and the hybrid loss (sdit.iddpm) of the authors' code."""

from __future__ import annotations

import math

import pytest
import torch

from sdit.diffusion import Diffusion, Schedule, p_mean_variance, respaced_ddpm_steps, respaced_timesteps, sample
from sdit.iddpm import hybrid_loss, hybrid_loss_terms
from sdit.models import build_model
from sdit.workload import DEFAULT_STEPS, Workload


def test_respaced_timesteps_are_the_authors_250() -> None:
    ts = respaced_timesteps(1000, 250)
    assert len(ts) == 250 and ts[:4] == [0, 4, 8, 12] and ts[-2:] == [995, 999]
    assert ts == [round(k * 999 / 249) for k in range(250)]
    assert respaced_timesteps(1000, 1000) == list(range(1000))
    assert DEFAULT_STEPS["ddpm-respaced"] == 250 and Workload.respaced().model_calls == 250
    with pytest.raises(ValueError, match="2 to 1000"):
        respaced_timesteps(1000, 1)


def test_respaced_schedule_keeps_alpha_bar_at_the_kept_steps() -> None:
    d = Diffusion()
    ts = respaced_timesteps(1000, 250)
    s = Schedule.of(d, ts)
    assert torch.allclose(torch.cumprod(1 - s.betas, 0), d.alphas_bar[ts], rtol=1e-12, atol=0)
    full = Schedule.of(d)
    assert torch.allclose(full.betas, d.betas, rtol=1e-9, atol=0)
    assert full.posterior_log_variance[0] == full.posterior_log_variance[1]  # clipped at t = 0


def test_learned_range_ends_are_beta_and_posterior_variance() -> None:
    s = Schedule.of(Diffusion())
    x = torch.zeros(2, 1, 2, 2)
    index = torch.tensor([10, 500])
    for v, expected in ((1.0, s.betas.log()), (-1.0, s.posterior_log_variance)):
        out = torch.cat([torch.zeros_like(x), torch.full_like(x, v)], dim=1)
        _, log_var = p_mean_variance(s, out, x, index)
        assert torch.allclose(log_var[:, 0, 0, 0], expected[index].float(), atol=1e-6)


def _oracle(diffusion: Diffusion, x0: torch.Tensor, v: float):
    """The exact eps of a one-point data set x0, with a constant variance output v."""
    def model(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = diffusion.alphas_bar[t].float().view(-1, 1, 1, 1)
        eps = (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()
        return torch.cat([eps, torch.full_like(eps, v)], dim=1)
    return model


def test_respaced_sampler_with_an_oracle_lands_on_the_data_and_passes_original_steps() -> None:
    d = Diffusion()
    x0 = torch.full((3, 1, 4, 4), 0.25)
    seen: list[int] = []
    oracle = _oracle(d, x0, v=0.3)

    def model(x_t, t):
        seen.append(int(t[0]))
        return oracle(x_t, t)

    steps = list(respaced_ddpm_steps(model, d, torch.randn(3, 1, 4, 4), 25))
    assert seen == sorted(respaced_timesteps(1000, 25), reverse=True)
    assert (steps[-1].x - x0).abs().max() < 1e-4


def test_hybrid_loss_closed_forms() -> None:
    d = Diffusion()
    x0 = torch.rand(2, 1, 4, 4) * 1.6 - 0.8
    noise = torch.randn_like(x0)
    t = torch.tensor([7, 400])
    s = Schedule.of(d)
    # exact eps and v = -1 (the true posterior variance): mse and KL vanish
    mse, vb = hybrid_loss_terms(_oracle(d, x0, -1.0), d, x0, t, noise)
    assert mse.abs().max() < 1e-8 and vb.abs().max() < 1e-5
    # v = +1: KL of two Gaussians with equal means, variances beta~ vs beta, in bits
    _, vb = hybrid_loss_terms(_oracle(d, x0, 1.0), d, x0, t, noise)
    lp, lb = s.posterior_log_variance[t], s.betas[t].log()
    expected = 0.5 * (-1 + lb - lp + (lp - lb).exp()) / math.log(2)
    assert torch.allclose(vb.double(), expected, rtol=1e-4)
    # t = 0: the discretised decoder NLL, finite and positive
    _, vb0 = hybrid_loss_terms(_oracle(d, x0, 0.0), d, x0, torch.tensor([0, 0]), noise)
    assert torch.isfinite(vb0).all() and (vb0 > 0).all()


def test_vb_term_trains_the_variance_channels_only() -> None:
    d = Diffusion()
    x0 = torch.rand(2, 1, 4, 4) * 2 - 1
    noise, t = torch.randn_like(x0), torch.tensor([3, 600])
    raw = torch.randn(2, 2, 4, 4, requires_grad=True)

    def model(x_t, t_):
        return raw * 1.0

    mse, vb = hybrid_loss_terms(model, d, x0, t, noise)
    (g_vb,) = torch.autograd.grad(vb.sum(), raw, retain_graph=True)
    (g_mse,) = torch.autograd.grad(mse.sum(), raw)
    assert g_vb[:, :1].abs().max() == 0 and g_vb[:, 1:].abs().max() > 0
    assert g_mse[:, 1:].abs().max() == 0


def test_authors_model_samples_with_given_and_uniform_labels() -> None:
    model = build_model("sdit-tiny-authors").eval()
    seen: list[torch.Tensor] = []
    model.label_embed.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    x = sample(model, Workload.respaced(3, batch_size=3, seed=1), labels=torch.tensor([1, 2, 3]))
    assert x.shape == (3, 3, 28, 28) and torch.isfinite(x).all()
    assert len(seen) == 3 and all(s.tolist() == [1, 2, 3] for s in seen)
    seen.clear()
    sample(model, Workload.ddim(2, batch_size=4, seed=1))
    assert len(seen) == 2 and 0 <= int(seen[0].min()) and int(seen[0].max()) <= 9  # uniform over 0..9
    with pytest.raises(ValueError, match="not class-conditional"):
        sample(build_model("sdit-tiny"), Workload.ddim(1), labels=torch.tensor([1]))


def test_hybrid_loss_trains_the_authors_model() -> None:
    model = build_model("sdit-tiny-authors").train()
    d = Diffusion()
    x0 = torch.rand(2, 3, 28, 28) * 2 - 1
    y = torch.tensor([1, 2])
    loss = hybrid_loss(lambda x, t: model(x, t, y), d, x0, torch.tensor([5, 900]), torch.randn_like(x0))
    loss.backward()
    assert torch.isfinite(loss) and model.final_linear.weight.grad.abs().max() > 0
