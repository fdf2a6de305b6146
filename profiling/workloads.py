"""Workloads to profile: one forward at a diffusion timestep, or a whole sampling run."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from profiling.counter import LayerCounter
from profiling.profile import Profile, build_profile
from sdit.diffusion import Diffusion, sampler_steps


def _time_steps(model: nn.Module) -> int:
    return int(getattr(model.config, "time_steps", 0))


def _noise(model: nn.Module, batch_size: int, seed: int, device: torch.device | str) -> Tensor:
    cfg = model.config
    generator = torch.Generator(device=device).manual_seed(seed)
    shape = (batch_size, cfg.in_channels, cfg.image_size, cfg.image_size)
    return torch.randn(shape, generator=generator, device=device)


@torch.no_grad()
def profile_forward(
    model: nn.Module,
    *,
    name: str,
    batch_size: int = 1,
    timestep: int = 500,
    seed: int = 0,
    strict: bool = False,
    images: Tensor | None = None,
    device: torch.device | str = "cpu",
) -> Profile:
    """Count one forward of ``model`` at diffusion timestep ``timestep``.

    Args:
        name: Preset name or checkpoint path, recorded in the profile.
        images: (B, C, H, W) inputs x_t; by default N(0, I) noise from ``seed``
            (what the sampler feeds the model at its first step).
    """
    x = images if images is not None else _noise(model, batch_size, seed, device)
    t = torch.full((x.shape[0],), timestep, dtype=torch.long, device=x.device)
    model.eval()
    with LayerCounter(model, strict=strict) as counter:
        with counter.step(index=0, t=timestep):
            model(x, t)
    steps, unsupported = counter.finish()
    return build_profile(
        steps, unsupported, model=name, kind=model.config.kind,
        workload={"kind": "forward", "timestep": timestep, "input": "N(0, I) noise" if images is None else "given"},
        batch_size=x.shape[0], time_steps=_time_steps(model), in_spiking_block=counter.in_spiking_block,
    )


@torch.no_grad()
def profile_sampling(
    model: nn.Module,
    *,
    name: str,
    method: str = "ddim",
    sample_steps: int = 50,
    batch_size: int = 1,
    seed: int = 0,
    strict: bool = False,
    device: torch.device | str = "cpu",
) -> Profile:
    """Count a whole DDIM (``sample_steps`` steps) or DDPM (1000 steps) sampling run."""
    diffusion = Diffusion()
    x = _noise(model, batch_size, seed, device)
    generator = torch.Generator(device=device).manual_seed(seed + 1)
    model.eval()
    with LayerCounter(model, strict=strict) as counter:
        # A step window spans one model call and the sampler update that follows it,
        # which is attributed to the pseudo-layer "(outside model)".
        def counted(x_t: Tensor, t: Tensor) -> Tensor:
            counter.begin_step(t=int(t[0]))
            return model(x_t, t)

        for _ in sampler_steps(counted, diffusion, x, method, sample_steps, generator):
            counter.end_step()
    steps, unsupported = counter.finish()
    n_steps = sample_steps if method == "ddim" else diffusion.num_steps
    return build_profile(
        steps, unsupported, model=name, kind=model.config.kind,
        workload={"kind": method, "steps": n_steps},
        batch_size=batch_size, time_steps=_time_steps(model), in_spiking_block=counter.in_spiking_block,
    )


def profile_workload(
    model: nn.Module,
    *,
    name: str,
    batch_size: int = 1,
    timestep: int = 500,
    sample_steps: int = 0,
    method: str = "ddim",
    seed: int = 0,
    strict: bool = False,
) -> Profile:
    """One forward at ``timestep``, or a sampling run when ``sample_steps`` > 0 or ``method`` is ddpm."""
    if sample_steps or method == "ddpm":
        return profile_sampling(model, name=name, method=method, sample_steps=sample_steps or 50,
                                batch_size=batch_size, seed=seed, strict=strict)
    return profile_forward(model, name=name, batch_size=batch_size, timestep=timestep, seed=seed, strict=strict)
