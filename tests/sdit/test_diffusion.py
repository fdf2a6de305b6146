from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from sdit.diffusion import Diffusion, ddim_steps, ddim_timesteps, ddpm_steps, run_steps, sample
from sdit.models import build_model
from sdit.noise import ImageNoise
from sdit.workload import DIFFUSION_STEPS, Workload


def test_linear_schedule_endpoints() -> None:
    d = Diffusion()
    assert d.num_steps == DIFFUSION_STEPS
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


def _images(model, channels: int, size: int):
    """``model`` with the config :func:`sample` reads the image shape from."""
    model.config = SimpleNamespace(in_channels=channels, image_size=size)
    return model


def _oracle(x0: torch.Tensor, d: Diffusion):
    """An epsilon model that knows the data is the constant x0: eps = (x_t - sqrt(abar) x0) / sqrt(1-abar)."""

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = d.alphas_bar[t].float().view(-1, 1, 1, 1)
        return (x - abar.sqrt() * x0) / (1 - abar).sqrt()

    return _images(model, x0.shape[1] if x0.dim() == 4 else 1, x0.shape[-1])


@pytest.mark.parametrize("work", [Workload.ddim(20, batch_size=3, seed=3), Workload.ddpm(batch_size=3, seed=3)])
def test_samplers_recover_the_data_with_an_oracle(work: Workload) -> None:
    d = Diffusion()
    x0 = torch.linspace(-1, 1, 16).view(1, 1, 4, 4)
    out = sample(_oracle(x0, d), work, diffusion=d)
    assert torch.allclose(out, x0.expand(3, -1, -1, -1), atol=1e-3)


def test_step_iterators_visit_every_timestep() -> None:
    d = Diffusion()
    model = _oracle(torch.zeros(1, 1, 2, 2), d)
    x = torch.randn(2, 1, 2, 2)
    assert [s.t for s in ddim_steps(model, d, x, 10)] == ddim_timesteps(1000, 10)
    assert [s.t for s in ddpm_steps(model, d, x)] == list(range(999, -1, -1))
    assert [s.t for s in run_steps(model, Workload.ddim(10, batch_size=2))] == ddim_timesteps(1000, 10)
    assert [s.t for s in run_steps(model, Workload.respaced(5))] == [999, 749, 500, 250, 0]


def test_a_forward_is_one_call_on_the_seeded_noise_and_draws_no_images() -> None:
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append((x, t))
        return 2 * x

    model = _images(model, 1, 4)
    (step,) = run_steps(model, Workload.forward(123, batch_size=2, seed=7))
    noise = ImageNoise(7, range(2)).randn((2, 1, 4, 4), "cpu")
    assert step.t == 123 and calls[0][1].tolist() == [123, 123] and torch.equal(calls[0][0], noise)
    assert torch.equal(step.x, 2 * noise)
    with pytest.raises(ValueError, match="one forward at t=123, batch 2, seed 7 draws no images"):
        sample(model, Workload.forward(123, batch_size=2, seed=7))


@pytest.mark.parametrize("name", ["sdit-tiny", "dit-tiny"])
def test_ddim_sampling_a_tiny_preset(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name).eval()
    d = Diffusion()
    a = sample(model, Workload.ddim(5, batch_size=3, seed=11), diffusion=d)
    b = sample(model, Workload.ddim(5, batch_size=3, seed=11), diffusion=d)
    c = sample(model, Workload.ddim(5, batch_size=3, seed=12), diffusion=d)
    assert a.shape == (3, 1, 28, 28)
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_ddim_with_eta_1_over_all_steps_is_ddpm() -> None:
    # Same mean, same posterior variance, same noise draws (none at the last step).
    d = Diffusion()

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0.5 * x + (t.float() / 1000).view(-1, 1, 1, 1)

    model = _images(model, 1, 4)
    ddpm = sample(model, Workload.ddpm(batch_size=2, seed=5), diffusion=d)
    ddim = sample(model, Workload.ddim(1000, eta=1.0, batch_size=2, seed=5), diffusion=d)
    assert torch.allclose(ddim, ddpm, atol=1e-4)
    assert not torch.allclose(sample(model, Workload.ddim(1000, batch_size=2, seed=5), diffusion=d), ddpm, atol=1e-2)


def test_stochastic_ddim_recovers_the_data_and_is_seeded() -> None:
    d = Diffusion()
    x0 = torch.linspace(-1, 1, 16).view(1, 1, 4, 4)
    oracle = _oracle(x0, d)
    a = sample(oracle, Workload.ddim(20, eta=1.0, batch_size=3, seed=3), diffusion=d)
    assert torch.allclose(a, x0.expand(3, -1, -1, -1), atol=1e-3)
    model = build_model("dit-tiny").eval()
    b = sample(model, Workload.ddim(4, eta=0.5, batch_size=2, seed=3), diffusion=d)
    assert torch.equal(b, sample(model, Workload.ddim(4, eta=0.5, batch_size=2, seed=3), diffusion=d))
    assert not torch.equal(b, sample(model, Workload.ddim(4, eta=0.0, batch_size=2, seed=3), diffusion=d))
