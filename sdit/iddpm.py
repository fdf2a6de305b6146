"""Learned variance, respacing and the hybrid loss (Improved DDPM, Nichol & Dhariwal 2021), as the authors'
SDiT code trains and samples (AUTHORS-SDIT.md §6-7).

A learned-sigma model predicts 2C channels: the noise eps and v in [-1, 1], which interpolates the log
variance between the clipped posterior variance beta~_t and beta_t ("learned range", IDDPM Eq. 15):

    log sigma^2 = frac log beta_t + (1 - frac) log beta~_t,   frac = (v + 1) / 2.

Sampling is ancestral DDPM over a respaced subset of the training steps; training minimises
L = L_simple + L_vb (IDDPM Eq. 16, weight 1 on the per-step vb term), the vb term with the eps half
detached. Everything here is a function of a :class:`sdit.diffusion.Diffusion` and a callable model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from sdit.diffusion import Diffusion, SampleStep

DEFAULT_STEPS = 250  # the authors' sample_ddp.py default
LabelledModel = Callable[[Tensor, Tensor], Tensor]  # (x_t, original t) -> (B, C or 2C, H, W)


def respaced_timesteps(num_train_steps: int, num_steps: int) -> list[int]:
    """The kept original steps, ascending: s_k = round(k (S - 1) / (n - 1)), k = 0..n-1 (0, 4, ..., 995, 999)."""
    if not 2 <= num_steps <= num_train_steps:
        raise ValueError(f"respaced sampling needs 2 to {num_train_steps} steps, got {num_steps}")
    return [round(k * (num_train_steps - 1) / (num_steps - 1)) for k in range(num_steps)]


@dataclass(frozen=True)
class Schedule:
    """Posterior quantities of a (possibly respaced) schedule, float64, one entry per kept step.

    Attributes:
        timesteps: (n,) the original step index of each entry (what the network receives).
        betas: (n,) beta'_k = 1 - abar_{s_k} / abar_{s_{k-1}}.
    """

    timesteps: Tensor
    betas: Tensor
    alphas_bar: Tensor
    alphas_bar_prev: Tensor
    posterior_variance: Tensor
    posterior_log_variance: Tensor  # clipped: the t = 0 entry replaced by the t = 1 one
    posterior_mean_x0: Tensor  # coefficient of x_0 in the posterior mean
    posterior_mean_xt: Tensor  # coefficient of x_t

    @classmethod
    def of(cls, diffusion: Diffusion, timesteps: list[int] | None = None) -> Schedule:
        """The schedule over ``timesteps`` (ascending original indices; all steps by default)."""
        steps = list(range(diffusion.num_steps)) if timesteps is None else timesteps
        abar_all = diffusion.alphas_bar
        abar = abar_all[steps]  # (n,)
        abar_prev = torch.cat([torch.ones(1, dtype=abar.dtype), abar[:-1]])  # (n,)
        betas = 1.0 - abar / abar_prev
        var = betas * (1.0 - abar_prev) / (1.0 - abar)
        log_var = torch.log(torch.cat([var[1:2], var[1:]])) if len(steps) > 1 else torch.log(betas)
        return cls(
            timesteps=torch.tensor(steps, dtype=torch.long), betas=betas, alphas_bar=abar, alphas_bar_prev=abar_prev,
            posterior_variance=var, posterior_log_variance=log_var,
            posterior_mean_x0=betas * abar_prev.sqrt() / (1.0 - abar),
            posterior_mean_xt=(1.0 - abar_prev) * (1.0 - betas).sqrt() / (1.0 - abar),
        )

    def at(self, values: Tensor, index: Tensor, like: Tensor) -> Tensor:
        """values[index] in ``like``'s dtype and device, shaped (B, 1, 1, 1)."""
        return values.to(like.device)[index].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def split_output(out: Tensor, channels: int) -> tuple[Tensor, Tensor | None]:
    """(eps, v) of a learned-sigma output (B, 2C, ...), or (eps, None) for a noise-only one (B, C, ...)."""
    if out.shape[1] == 2 * channels:
        return out[:, :channels], out[:, channels:]
    if out.shape[1] == channels:
        return out, None
    raise ValueError(f"model output has {out.shape[1]} channels, expected {channels} or {2 * channels}")


def p_mean_variance(schedule: Schedule, out: Tensor, x_t: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and log variance of p(x_{t-1} | x_t) from a model output, no clipping of x_0.

    x_0 = sqrt(1/abar) x_t - sqrt(1/abar - 1) eps; the mean is the posterior mean at that x_0; the log
    variance is learned range when ``out`` has 2C channels, the clipped posterior one otherwise.

    Args:
        index: (B,) positions in ``schedule`` (not original timesteps).
    """
    eps, v = split_output(out, x_t.shape[1])
    abar = schedule.at(schedule.alphas_bar, index, x_t)
    x0 = (1.0 / abar).sqrt() * x_t - (1.0 / abar - 1.0).sqrt() * eps
    mean = schedule.at(schedule.posterior_mean_x0, index, x_t) * x0 + schedule.at(
        schedule.posterior_mean_xt, index, x_t) * x_t
    min_log = schedule.at(schedule.posterior_log_variance, index, x_t)
    if v is None:
        return mean, min_log.expand_as(x_t)
    max_log = schedule.at(schedule.betas, index, x_t).log()
    frac = (v + 1.0) / 2.0
    return mean, frac * max_log + (1.0 - frac) * min_log  # IDDPM Eq. 15


def respaced_ddpm_steps(
    model: LabelledModel,
    diffusion: Diffusion,
    x_t: Tensor,
    num_steps: int = DEFAULT_STEPS,
    generator: torch.Generator | None = None,
) -> Iterator[SampleStep]:
    """Ancestral DDPM over ``num_steps`` respaced steps with the model's learned variance, yielding per call.

    x <- mu + sigma z at every step but the last (z ~ N(0, I)); the network gets the original timestep.
    The model resets its neurons after every call (SDiT's forward does).
    """
    schedule = Schedule.of(diffusion, respaced_timesteps(diffusion.num_steps, num_steps))
    batch = x_t.shape[0]
    for step, k in enumerate(range(num_steps - 1, -1, -1)):
        t = int(schedule.timesteps[k])
        index = torch.full((batch,), k, dtype=torch.long, device=x_t.device)
        out = model(x_t, torch.full((batch,), t, dtype=torch.long, device=x_t.device))
        mean, log_var = p_mean_variance(schedule, out, x_t, index)
        if k > 0:
            noise = torch.randn(x_t.shape, device=x_t.device, dtype=x_t.dtype, generator=generator)
            x_t = mean + (0.5 * log_var).exp() * noise
        else:
            x_t = mean
        yield SampleStep(index=step, t=t, x=x_t)


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
    model: LabelledModel, diffusion: Diffusion, x0: Tensor, t: Tensor, noise: Tensor
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
    model: LabelledModel, diffusion: Diffusion, x0: Tensor, t: Tensor, noise: Tensor
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
