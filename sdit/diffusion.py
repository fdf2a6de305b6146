"""DDPM noise schedule, epsilon-prediction loss, and the DDPM / DDIM samplers.

Separate from the models: anything mapping ``(x_t, t) -> eps`` works. Notation
follows Ho et al. 2020 (DDPM) and Song et al. 2021 (DDIM); ``alpha_bar_t`` is
the cumulative product of ``1 - beta_t``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from sdit import progress
from sdit.progress import StepCallback

EpsModel = Callable[[Tensor, Tensor], Tensor]
METHODS = ("ddim", "ddpm", "ddpm-respaced")


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
    generator: torch.Generator | None = None,
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
            x_t = x_t + sigma * torch.randn(x_t.shape, device=x_t.device, dtype=x_t.dtype, generator=generator)
        yield SampleStep(index=index, t=t, x=x_t)


def ddpm_steps(
    model: EpsModel,
    diffusion: Diffusion,
    x_t: Tensor,
    generator: torch.Generator | None = None,
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
            noise = torch.randn(x_t.shape, device=x_t.device, dtype=x_t.dtype, generator=generator)
            x_t = mean + var**0.5 * noise
        else:
            x_t = mean
        yield SampleStep(index=index, t=t, x=x_t)


def sampler_steps(
    model: EpsModel,
    diffusion: Diffusion,
    x_t: Tensor,
    method: str,
    num_steps: int,
    generator: torch.Generator | None = None,
    eta: float = 0.0,
    on_step: StepCallback | None = None,
) -> Iterator[SampleStep]:
    """The step iterator of ``method``: ``"ddim"`` (``num_steps`` steps, noise scale ``eta``), ``"ddpm"``
    (all steps; ``eta`` must stay 0, its noise is fixed by Algorithm 2) or ``"ddpm-respaced"`` (ancestral
    DDPM over ``num_steps`` respaced steps with the learned variance of a learned-sigma model, the authors'
    sampler, :func:`sdit.iddpm.respaced_ddpm_steps`).

    Each step is reported to the current :mod:`sdit.progress` reporter (silent by default) and to
    ``on_step(done, total)`` when given, after the consumer has taken it.
    """
    check_sampler(method, eta)
    if method == "ddpm-respaced":
        from sdit.iddpm import respaced_ddpm_steps  # imports this module

        steps = respaced_ddpm_steps(model, diffusion, x_t, num_steps, generator=generator)
        total, label = num_steps, f"respaced ddpm sampling, {num_steps} steps"
    elif method == "ddim":
        steps = ddim_steps(model, diffusion, x_t, num_steps, eta=eta, generator=generator)
        total, label = num_steps, f"ddim sampling, {num_steps} steps"
    else:
        steps = ddpm_steps(model, diffusion, x_t, generator=generator)
        total, label = diffusion.num_steps, f"ddpm sampling, {diffusion.num_steps} steps"
    return _reported(steps, label, total, on_step)


def _reported(steps: Iterator[SampleStep], label: str, total: int,
              on_step: StepCallback | None) -> Iterator[SampleStep]:
    """``steps``, each reported as done once the consumer returns for the next one."""
    with progress.task(label, total, on_step) as step_done:
        for done, step in enumerate(steps, start=1):
            yield step
            step_done(done, total)


def check_sampler(method: str, eta: float = 0.0) -> None:
    """Refuse an unknown method, a DDIM noise scale outside [0, 1] (NaN too), or a noise scale for DDPM.

    ``eta`` 0 is deterministic DDIM, 1 DDPM's posterior variance at the chosen steps.
    """
    if method not in METHODS:
        raise ValueError(f"sampling method must be 'ddim', 'ddpm' or 'ddpm-respaced', got {method!r}")
    if not 0.0 <= eta <= 1.0:  # also refuses NaN
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    if method != "ddim" and eta != 0.0:
        raise ValueError("eta applies to DDIM only; DDPM's noise is fixed (DDIM, eta 1, all steps equals it)")


def num_classes_of(model: object) -> int:
    """K of a class-conditional model (its config's ``num_classes``), 0 for any other."""
    return int(getattr(getattr(model, "config", None), "num_classes", 0) or 0)


def uniform_labels(num_classes: int, num: int, seed: int, device: torch.device | str = "cpu") -> Tensor:
    """(num,) labels uniform over 0..K-1 (the authors' sampler), from their own generator seeded ``seed``."""
    generator = torch.Generator(device=device).manual_seed(seed)
    return torch.randint(0, num_classes, (num,), generator=generator, device=device)


@torch.no_grad()
def sample(
    model: EpsModel,
    diffusion: Diffusion,
    shape: tuple[int, ...],
    method: str = "ddim",
    num_steps: int = 50,
    seed: int = 0,
    device: torch.device | str = "cpu",
    eta: float = 0.0,
    labels: Tensor | None = None,
    on_step: StepCallback | None = None,
) -> Tensor:
    """Draw images from pure noise; deterministic for a seed.

    Args:
        shape: (B, C, H, W).
        method: ``"ddim"`` (``num_steps`` steps), ``"ddpm"`` (all training steps) or ``"ddpm-respaced"``
            (``num_steps`` respaced steps, learned variance).
        eta: DDIM's noise scale (Song et al. 2021, Eq. 16): 0 deterministic, 1 the DDPM
            posterior variance at the chosen steps. DDPM only with 0.
        labels: (B,) classes for a class-conditional model; by default :func:`uniform_labels` from
            ``seed``. Refused for a model without classes.
        on_step: Called as ``on_step(done, total)`` after each denoising step (progress; see
            :mod:`sdit.progress` for the context-wide reporter).

    Returns:
        (B, C, H, W) samples, nominally in [-1, 1].
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(shape, device=device, generator=generator)
    classes = num_classes_of(model)
    if labels is not None and not classes:
        raise ValueError("labels given, but the model is not class-conditional")
    net: EpsModel = model
    if classes:
        y = labels.to(device) if labels is not None else uniform_labels(classes, shape[0], seed, device)

        def net(x_t: Tensor, t: Tensor) -> Tensor:
            return model(x_t, t, y)  # type: ignore[call-arg]

    for step in sampler_steps(net, diffusion, x, method, num_steps, generator, eta=eta, on_step=on_step):
        x = step.x
    return x
