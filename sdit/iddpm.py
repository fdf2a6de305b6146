"""The hybrid loss (Improved DDPM, Nichol & Dhariwal 2021) with which the authors' SDiT code trains a
learned-sigma model (docs/authors-layout.md §6-7); the learned variance and the respaced sampler are in
:mod:`sdit.diffusion`.

Training minimises L = L_simple + L_vb (IDDPM Eq. 16, weight 1 on the per-step vb term), the vb term
with the eps half detached. Everything here is a function of a :class:`sdit.diffusion.Diffusion` and
a callable model.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from sdit.diffusion import Diffusion, EpsModel, Schedule, p_mean_variance, split_output


def normal_kl(mean1: Tensor, log_var1: Tensor, mean2: Tensor, log_var2: Tensor) -> Tensor:
    """KL(N(mean1, e^log_var1) || N(mean2, e^log_var2)) per element, in nats."""
    return 0.5 * (-1.0 + log_var2 - log_var1 + (log_var1 - log_var2).exp()
                  + (mean1 - mean2) ** 2 * (-log_var2).exp())


def _standard_normal_cdf(x: Tensor) -> Tensor:
    """Phi(x) by the tanh approximation 0.5 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x0: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log P(x0) per element under N(mean, e^(2 log_scale)) discretised to 256 bins of width 2/255 on [-1, 1].

    The edge bins are open: below -0.999 the whole lower tail counts, above 0.999 the upper one (DDPM §3.3).
    """
    centred = x0 - mean
    inv_std = (-log_scale).exp()
    cdf_plus = _standard_normal_cdf(inv_std * (centred + 1.0 / 255.0))
    cdf_min = _standard_normal_cdf(inv_std * (centred - 1.0 / 255.0))
    log_cdf_plus = cdf_plus.clamp(min=1e-12).log()
    log_one_minus_cdf_min = (1.0 - cdf_min).clamp(min=1e-12).log()
    log_delta = (cdf_plus - cdf_min).clamp(min=1e-12).log()
    return torch.where(x0 < -0.999, log_cdf_plus, torch.where(x0 > 0.999, log_one_minus_cdf_min, log_delta))


def hybrid_loss_terms(
    model: EpsModel, diffusion: Diffusion, x0: Tensor, t: Tensor, noise: Tensor
) -> tuple[Tensor, Tensor]:
    """Per-sample (mse, vb) of the authors' objective at given timesteps and noise (one forward).

    mse = mean over C, H, W of (eps - eps_hat)^2. vb (bits per dimension) uses the output with eps_hat
    detached: KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for t > 0, the discretised decoder NLL at t = 0.

    Returns:
        (B,) mse and (B,) vb.
    """
    schedule = Schedule.of(diffusion)
    x_t = diffusion.q_sample(x0, t, noise)
    out = model(x_t, t)
    eps, v = split_output(out, x0.shape[1])
    mse = ((noise - eps) ** 2).mean(dim=tuple(range(1, x0.dim())))
    if v is None:
        return mse, torch.zeros_like(mse)
    frozen = torch.cat([eps.detach(), v], dim=1)  # the vb term trains the variance only
    mean, log_var = p_mean_variance(schedule, frozen, x_t, t)
    true_mean = schedule.at(schedule.posterior_mean_x0, t, x0) * x0 + schedule.at(
        schedule.posterior_mean_xt, t, x0) * x_t
    true_log_var = schedule.at(schedule.posterior_log_variance, t, x0)
    dims = tuple(range(1, x0.dim()))
    kl = normal_kl(true_mean, true_log_var, mean, log_var).mean(dim=dims) / math.log(2.0)
    nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var).mean(dim=dims) / math.log(2.0)
    return mse, torch.where(t == 0, nll, kl)


def hybrid_loss(
    model: EpsModel, diffusion: Diffusion, x0: Tensor, t: Tensor, noise: Tensor
) -> Tensor:
    """The authors' training loss: mean over the batch of mse + vb (:func:`hybrid_loss_terms`)."""
    mse, vb = hybrid_loss_terms(model, diffusion, x0, t, noise)
    return (mse + vb).mean()


def training_loss(
    model: Callable[..., Tensor], diffusion: Diffusion, x0: Tensor, t: Tensor, noise: Tensor,
    labels: Tensor | None = None, learn_sigma: bool = False,
) -> Tensor:
    """The training loss a model's config asks for: the authors' :func:`hybrid_loss` for a learned-sigma model,
    the DDPM epsilon MSE otherwise; ``labels`` (B,) go to a class-conditional model."""
    def net(x_t: Tensor, t_: Tensor) -> Tensor:
        return model(x_t, t_) if labels is None else model(x_t, t_, labels)

    if learn_sigma:
        return hybrid_loss(net, diffusion, x0, t, noise)
    return diffusion.loss_at(model if labels is None else net, x0, t, noise)
