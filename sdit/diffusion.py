"""DDPM noise schedule, epsilon-prediction loss, and the samplers: DDIM, DDPM, and respaced DDPM with
learned variance (the authors' sampler); :func:`sample` runs a :class:`~sdit.workload.Workload`.

Separate from the models: anything mapping ``(x_t, t) -> eps`` works (a learned-sigma model's
(B, 2C, H, W) output carries eps in its first C channels). Notation follows Ho et al. 2020 (DDPM),
Song et al. 2021 (DDIM) and Nichol & Dhariwal 2021 (IDDPM); ``alpha_bar_t`` is the cumulative
product of ``1 - beta_t``.

Learned variance: a learned-sigma model predicts eps and v in [-1, 1], which interpolates the log
variance between the clipped posterior variance beta~_t and beta_t ("learned range", IDDPM Eq. 15):

    log sigma^2 = frac log beta_t + (1 - frac) log beta~_t,   frac = (v + 1) / 2.

Respaced sampling is ancestral DDPM over a subset of the training steps with that variance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sdit import progress
from sdit.noise import ImageNoise, standard_normal_like
from sdit.progress import StepCallback
from sdit.workload import DEFAULT_STEPS, SAMPLERS, Workload

EpsModel = Callable[[Tensor, Tensor], Tensor]


def noise_prediction(out: Tensor, x_t: Tensor) -> Tensor:
    """The eps part of a model output: all of it, or the first C of 2C channels of a learned-sigma model."""
    return out[:, : x_t.shape[1]] if out.shape[1] == 2 * x_t.shape[1] else out


@dataclass(frozen=True)
class DiffusionConfig:
    """Linear-beta DDPM schedule (Ho et al. 2020, §4)."""

    num_steps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02


class Diffusion:
    """The forward process q(x_t | x_0) and the epsilon-prediction MSE loss."""

    def __init__(self, config: DiffusionConfig = DiffusionConfig()) -> None:
        self.config = config
        betas = torch.linspace(config.beta_start, config.beta_end, config.num_steps, dtype=torch.float64)
        self.betas = betas  # (S,)
        self.alphas_bar = torch.cumprod(1.0 - betas, dim=0)  # (S,)

    @property
    def num_steps(self) -> int:
        return self.config.num_steps

    def _gather(self, values: Tensor, t: Tensor, like: Tensor) -> Tensor:
        """values[t] as float of ``like``'s dtype, shaped (B, 1, 1, 1) to broadcast over images."""
        return values.to(like.device)[t].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (DDPM Eq. 4)."""
        abar = self._gather(self.alphas_bar, t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def loss(
        self, model: EpsModel, x0: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """Simple DDPM loss: E ||eps - eps_theta(x_t, t)||^2 with t uniform (DDPM Eq. 14)."""
        t = torch.randint(0, self.num_steps, (x0.shape[0],), device=x0.device, generator=generator)
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        return self.loss_at(model, x0, t, noise)

    def loss_at(self, model: EpsModel, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """The same loss at given timesteps and noise (deterministic)."""
        return torch.mean((model(self.q_sample(x0, t, noise), t) - noise) ** 2)


def ddim_timesteps(num_train_steps: int, num_sample_steps: int) -> list[int]:
    """Timesteps for a DDIM run, descending: ``linspace(S - 1, 0, n)`` rounded.

    The first step starts from pure noise at t = S - 1 and the last lands on t = 0;
    a single step runs at t = S - 1.
    """
    if not 1 <= num_sample_steps <= num_train_steps:
        raise ValueError(f"sample steps must be in [1, {num_train_steps}], got {num_sample_steps}")
    if num_sample_steps == 1:
        return [num_train_steps - 1]
    span = num_train_steps - 1
    return [round(span * (1 - i / (num_sample_steps - 1))) for i in range(num_sample_steps)]


@dataclass(frozen=True)
class SampleStep:
    """One denoising step: the timestep it ran at and the sample it produced."""

    index: int
    t: int
    x: Tensor


def ddim_steps(
    model: EpsModel,
    diffusion: Diffusion,
    x_t: Tensor,
    num_steps: int,
    eta: float = 0.0,
    noise: ImageNoise | None = None,
) -> Iterator[SampleStep]:
    """DDIM (Song et al. 2021, Eq. 12), yielding after each model call.

    With ``eta = 0`` the sampler is deterministic given ``x_t``.
    """
    ts = ddim_timesteps(diffusion.num_steps, num_steps)
    abar = diffusion.alphas_bar
    for index, t in enumerate(ts):
        t_prev = ts[index + 1] if index + 1 < len(ts) else -1
        a_t = float(abar[t])
        a_prev = float(abar[t_prev]) if t_prev >= 0 else 1.0
        eps = noise_prediction(model(x_t, torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)), x_t)
        x0_pred = (x_t - (1 - a_t) ** 0.5 * eps) / a_t**0.5  # "predicted x_0"
        sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5  # Eq. 16
        direction = (1 - a_prev - sigma**2) ** 0.5 * eps  # "direction pointing to x_t"
        x_t = a_prev**0.5 * x0_pred + direction
        if sigma > 0:
            x_t = x_t + sigma * standard_normal_like(x_t, noise)
        yield SampleStep(index=index, t=t, x=x_t)


def ddpm_steps(
    model: EpsModel,
    diffusion: Diffusion,
    x_t: Tensor,
    noise: ImageNoise | None = None,
) -> Iterator[SampleStep]:
    """Ancestral DDPM sampling over all training steps (Ho et al. 2020, Algorithm 2)."""
    betas, abar = diffusion.betas, diffusion.alphas_bar
    for index, t in enumerate(range(diffusion.num_steps - 1, -1, -1)):
        beta, a_t = float(betas[t]), float(abar[t])
        eps = noise_prediction(model(x_t, torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)), x_t)
        mean = (x_t - beta / (1 - a_t) ** 0.5 * eps) / (1 - beta) ** 0.5
        if t > 0:
            a_prev = float(abar[t - 1])
            var = beta * (1 - a_prev) / (1 - a_t)  # posterior variance beta~_t
            x_t = mean + var**0.5 * standard_normal_like(x_t, noise)
        else:
            x_t = mean
        yield SampleStep(index=index, t=t, x=x_t)


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
    model: EpsModel,
    diffusion: Diffusion,
    x_t: Tensor,
    num_steps: int = DEFAULT_STEPS["ddpm-respaced"],
    noise: ImageNoise | None = None,
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
            x_t = mean + (0.5 * log_var).exp() * standard_normal_like(x_t, noise)
        else:
            x_t = mean
        yield SampleStep(index=step, t=t, x=x_t)


def num_classes_of(model: object) -> int:
    """K of a class-conditional model (its config's ``num_classes``), 0 for any other."""
    return int(getattr(getattr(model, "config", None), "num_classes", 0) or 0)


def uniform_labels(num_classes: int, num: int, seed: int, device: torch.device | str = "cpu") -> Tensor:
    """(num,) labels uniform over 0..K-1 (the authors' sampler), from their own generator seeded ``seed``."""
    generator = torch.Generator(device=device).manual_seed(seed)
    return torch.randint(0, num_classes, (num,), generator=generator, device=device)


def _sampler(model: EpsModel, diffusion: Diffusion, x_t: Tensor, workload: Workload,
             noise: ImageNoise) -> tuple[Iterator[SampleStep], str]:
    """The step iterator of ``workload``'s sampler from ``x_t``, and its progress label."""
    steps = int(workload.steps)
    if workload.kind == "ddim":
        return ddim_steps(model, diffusion, x_t, steps, eta=workload.eta, noise=noise), \
            f"ddim sampling, {steps} steps"
    if workload.kind == "ddpm":
        return ddpm_steps(model, diffusion, x_t, noise=noise), f"ddpm sampling, {steps} steps"
    return respaced_ddpm_steps(model, diffusion, x_t, steps, noise=noise), \
        f"respaced ddpm sampling, {steps} steps"


def _forward(model: EpsModel, x_t: Tensor, timestep: int) -> Iterator[SampleStep]:
    """One model call at ``timestep``; its step's ``x`` is the model's output."""
    t = torch.full((x_t.shape[0],), timestep, dtype=torch.long, device=x_t.device)
    yield SampleStep(index=0, t=timestep, x=model(x_t, t))


def run_steps(
    model: Any,
    workload: Workload,
    *,
    diffusion: Diffusion | None = None,
    device: torch.device | str = "cpu",
    labels: Tensor | None = None,
    noise: ImageNoise | None = None,
    on_step: StepCallback | None = None,
) -> Iterator[SampleStep]:
    """Every model call of ``workload`` on ``model``, each yielded once it (and the sampler update after it) ran.

    The initial noise, (B, C, H, W) of :meth:`Workload.image_shape` of ``model.config``, and then every
    step's noise of image k come from image k's own generator (:mod:`sdit.noise`), so a run is a function of
    the workload (and ``labels``), and its images are the first images of a set drawn with the same seed. A
    forward is one model call at the workload's timestep on that noise; its step's ``x`` is the output.
    The noise, the schedule and the labels are made at this call and the model runs as the steps are
    taken, so a caller can open a window (a counter's) around the model calls alone. Each step is reported
    to the current :mod:`sdit.progress` reporter (silent by default) and to ``on_step(done, total)`` when
    given, after the consumer has taken it.

    Args:
        model: An eps model ``(x_t, t) -> out`` (``(x_t, t, y)`` when class-conditional) whose ``config``
            gives ``in_channels`` and ``image_size``.
        diffusion: The noise schedule (default :class:`Diffusion`'s).
        labels: (B,) classes for a class-conditional model; by default :func:`uniform_labels` from the
            workload's seed. Refused for a model without classes.
        noise: The images' generators, when the batch is not images 0..B-1 of the workload's seed (a later
            batch of a set: :class:`~sdit.noise.ImageNoise` of its indices).
    """
    diffusion = diffusion or Diffusion()
    shape = workload.image_shape(model.config)
    if noise is None:
        noise = ImageNoise(workload.seed, range(shape[0]), device)
    x = noise.randn(shape, device)  # (B, C, H, W)
    classes = num_classes_of(model)
    if labels is not None and not classes:
        raise ValueError("labels given, but the model is not class-conditional")
    net: EpsModel = model
    if classes:
        y = labels.to(device) if labels is not None else uniform_labels(classes, x.shape[0], workload.seed, device)

        def net(x_t: Tensor, t: Tensor) -> Tensor:
            return model(x_t, t, y)

    if workload.is_sampling:
        steps, label = _sampler(net, diffusion, x, workload, noise)
    else:
        steps, label = _forward(net, x, int(workload.timestep)), f"one forward at t={workload.timestep}"
    return _reported(steps, label, workload.model_calls, on_step)


@torch.no_grad()
def _reported(steps: Iterator[SampleStep], label: str, total: int,
              on_step: StepCallback | None) -> Iterator[SampleStep]:
    """``steps``, without gradients, each reported as done once the consumer returns for the next one."""
    with progress.task(label, total, on_step) as step_done:
        for done, step in enumerate(steps, start=1):
            yield step
            step_done(done, total)


@torch.no_grad()
def sample(
    model: Any,
    workload: Workload,
    *,
    diffusion: Diffusion | None = None,
    device: torch.device | str = "cpu",
    labels: Tensor | None = None,
    noise: ImageNoise | None = None,
    on_step: StepCallback | None = None,
) -> Tensor:
    """Draw ``workload.batch_size`` images from pure noise with the workload's sampler; deterministic for a seed.

    Args:
        model, diffusion, device, labels, noise, on_step: As for :func:`run_steps`.

    Returns:
        (B, C, H, W) samples, nominally in [-1, 1].

    Raises:
        ValueError: ``workload`` is a forward (it draws no images), or labels for a model without classes.
    """
    if not workload.is_sampling:
        raise ValueError(f"{workload.label()} draws no images; sample a {', '.join(SAMPLERS)} workload")
    x = None
    for step in run_steps(model, workload, diffusion=diffusion, device=device, labels=labels, noise=noise,
                          on_step=on_step):
        x = step.x
    return x
