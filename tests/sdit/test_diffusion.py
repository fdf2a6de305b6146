from __future__ import annotations

import pytest
import torch

from sdit.diffusion import Diffusion, ddim_steps, ddim_timesteps, ddpm_steps, sample
from sdit.models import build_model


def test_linear_schedule_endpoints() -> None:
    d = Diffusion()
    assert d.betas[0].item() == pytest.approx(1e-4)
    assert d.betas[-1].item() == pytest.approx(0.02)
    assert d.alphas_bar[-1].item() == pytest.approx(4.036e-5, rel=1e-3)  # prod(1 - beta_t)


def test_q_sample_moments() -> None:
    d = Diffusion()
    x0 = torch.full((20000, 1, 1, 1), 0.5)
    t = torch.full((20000,), 500)
    xt = d.q_sample(x0, t, torch.randn_like(x0))
    abar = d.alphas_bar[500].item()
    assert xt.mean().item() == pytest.approx(abar**0.5 * 0.5, abs=0.02)
    assert xt.var().item() == pytest.approx(1 - abar, abs=0.02)


def test_ddim_timesteps() -> None:
    ts = ddim_timesteps(1000, 50)
    assert len(ts) == 50 and ts[0] == 999 and ts[-1] == 0
    assert all(a > b for a, b in zip(ts, ts[1:]))
    assert ddim_timesteps(1000, 1) == [999]
    assert ddim_timesteps(1000, 1000) == list(range(999, -1, -1))
    with pytest.raises(ValueError):
        ddim_timesteps(1000, 0)


def _oracle(x0: torch.Tensor, d: Diffusion):
    """An epsilon model that knows the data is the constant x0: eps = (x_t - sqrt(abar) x0) / sqrt(1-abar)."""

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = d.alphas_bar[t].float().view(-1, 1, 1, 1)
        return (x - abar.sqrt() * x0) / (1 - abar).sqrt()

    return model


@pytest.mark.parametrize("method", ["ddim", "ddpm"])
def test_samplers_recover_the_data_with_an_oracle(method: str) -> None:
    d = Diffusion()
    x0 = torch.linspace(-1, 1, 16).view(1, 1, 4, 4)
    out = sample(_oracle(x0, d), d, (3, 1, 4, 4), method=method, num_steps=20, seed=3)
    assert torch.allclose(out, x0.expand(3, -1, -1, -1), atol=1e-3)


def test_step_iterators_visit_every_timestep() -> None:
    d = Diffusion()
    model = _oracle(torch.zeros(1, 1, 2, 2), d)
    x = torch.randn(2, 1, 2, 2)
    assert [s.t for s in ddim_steps(model, d, x, 10)] == ddim_timesteps(1000, 10)
    assert [s.t for s in ddpm_steps(model, d, x)] == list(range(999, -1, -1))


@pytest.mark.parametrize("name", ["sdit-tiny", "dit-tiny"])
def test_ddim_sampling_a_tiny_preset(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name).eval()
    d = Diffusion()
    a = sample(model, d, (3, 1, 28, 28), num_steps=5, seed=11)
    b = sample(model, d, (3, 1, 28, 28), num_steps=5, seed=11)
    c = sample(model, d, (3, 1, 28, 28), num_steps=5, seed=12)
    assert a.shape == (3, 1, 28, 28)
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_unknown_method_is_an_error() -> None:
    with pytest.raises(ValueError, match="'ddim', 'ddpm' or 'ddpm-respaced'"):
        sample(_oracle(torch.zeros(1), Diffusion()), Diffusion(), (1, 1, 2, 2), method="euler")


def test_ddim_with_eta_1_over_all_steps_is_ddpm() -> None:
    # Same mean, same posterior variance, same noise draws (none at the last step).
    d = Diffusion()

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0.5 * x + (t.float() / 1000).view(-1, 1, 1, 1)

    ddpm = sample(model, d, (2, 1, 4, 4), method="ddpm", seed=5)
    ddim = sample(model, d, (2, 1, 4, 4), method="ddim", num_steps=1000, eta=1.0, seed=5)
    assert torch.allclose(ddim, ddpm, atol=1e-4)
    assert not torch.allclose(sample(model, d, (2, 1, 4, 4), method="ddim", num_steps=1000, seed=5), ddpm, atol=1e-2)


def test_stochastic_ddim_recovers_the_data_and_is_seeded() -> None:
    d = Diffusion()
    x0 = torch.linspace(-1, 1, 16).view(1, 1, 4, 4)
    oracle = _oracle(x0, d)
    a = sample(oracle, d, (3, 1, 4, 4), num_steps=20, eta=1.0, seed=3)
    assert torch.allclose(a, x0.expand(3, -1, -1, -1), atol=1e-3)
    model = build_model("dit-tiny").eval()
    b = sample(model, d, (2, 1, 28, 28), num_steps=4, eta=0.5, seed=3)
    assert torch.equal(b, sample(model, d, (2, 1, 28, 28), num_steps=4, eta=0.5, seed=3))
    assert not torch.equal(b, sample(model, d, (2, 1, 28, 28), num_steps=4, eta=0.0, seed=3))


@pytest.mark.parametrize(("method", "eta"), [("ddim", -0.1), ("ddim", 1.5), ("ddim", float("nan")), ("ddpm", 1.0)])
def test_bad_eta_is_refused(method: str, eta: float) -> None:
    d = Diffusion()
    with pytest.raises(ValueError, match="eta"):
        sample(_oracle(torch.zeros(1, 1, 2, 2), d), d, (1, 1, 2, 2), method=method, num_steps=2, eta=eta)
