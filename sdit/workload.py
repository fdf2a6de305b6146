"""What a model runs: one forward at a diffusion timestep, or a whole sampling run; pure data, no torch.

The same :class:`Workload` names the work everywhere (sampling, a profile's counts, a measurement,
a quality evaluation), so an estimate and a measurement of one workload are of the same work by
construction. Its fields are checked here, once; :func:`sdit.diffusion.sample` runs it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

# Training steps of the noise schedule (sdit.diffusion.DiffusionConfig's default; a test keeps them equal).
DIFFUSION_STEPS = 1000
WORKLOAD_KINDS = ("forward", "ddim", "ddpm", "ddpm-respaced")
SAMPLERS = WORKLOAD_KINDS[1:]  # the kinds that draw images
DEFAULT_TIMESTEP = 500  # a forward's timestep: mid-schedule
# Model calls of a sampling run when none is named: DDIM's 50 (the steps the shipped checkpoints' quality
# was measured with), all of DDPM's, the authors' 250 respaced steps (their sample_ddp.py default).
DEFAULT_STEPS = {"ddim": 50, "ddpm": DIFFUSION_STEPS, "ddpm-respaced": 250}


class WorkloadError(ValueError):
    """A workload whose fields do not fit its kind."""


class ImageConfig(Protocol):
    """What a model config says about its images (every preset config has it)."""

    in_channels: int
    image_size: int


@dataclass(frozen=True)
class Workload:
    """One forward at a diffusion timestep, or a whole sampling run, of ``batch_size`` images.

    Attributes:
        kind: ``forward`` (one model call at ``timestep`` on N(0, I) noise from ``seed``), ``ddim`` (``steps``
            DDIM steps, noise scale ``eta``), ``ddpm`` (ancestral, all :data:`DIFFUSION_STEPS` steps) or
            ``ddpm-respaced`` (ancestral DDPM over ``steps`` respaced steps with a learned-sigma model's
            variance: the authors' sampler).
        timestep: Diffusion timestep of a forward (default :data:`DEFAULT_TIMESTEP`); ``None`` for sampling runs.
        steps: Model calls of a sampling run; ``None`` for a forward. DDPM's is always :data:`DIFFUSION_STEPS`.
        eta: DDIM's noise scale (Song et al. 2021, Eq. 16): 0 deterministic, 1 DDPM's posterior variance at the
            chosen steps; 0 for every other kind (their noise is fixed).
        batch_size: Images per model call.
        seed: Seed of the initial noise (and, for stochastic samplers, of the noise drawn at each step).
    """

    kind: str = "forward"
    timestep: int | None = None
    steps: int | None = None
    eta: float = 0.0
    batch_size: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in WORKLOAD_KINDS:
            raise WorkloadError(f"workload kind must be one of {', '.join(WORKLOAD_KINDS)}, got {self.kind!r}")
        if self.kind == "forward" and self.timestep is None:
            object.__setattr__(self, "timestep", DEFAULT_TIMESTEP)
        if self.kind == "ddpm" and self.steps is None:
            object.__setattr__(self, "steps", DIFFUSION_STEPS)
        object.__setattr__(self, "eta", float(self.eta))
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise WorkloadError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise WorkloadError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.kind == "forward":
            if not isinstance(self.timestep, int) or not 0 <= self.timestep < DIFFUSION_STEPS:
                raise WorkloadError(f"timestep must be an integer in [0, {DIFFUSION_STEPS - 1}], "
                                    f"got {self.timestep!r}")
            if self.steps is not None or self.eta != 0.0:
                raise WorkloadError("a forward has no sampling steps or eta (use a sampler kind: "
                                    f"{', '.join(SAMPLERS)})")
            return
        if self.timestep is not None:
            raise WorkloadError(f"a {self.kind} run has no single timestep (use kind forward)")
        if self.kind != "ddim" and self.eta != 0.0:
            raise WorkloadError("eta applies to DDIM only; DDPM's noise is fixed (DDIM, eta 1, all steps equals it)")
        if self.kind == "ddpm":
            if self.steps != DIFFUSION_STEPS:
                raise WorkloadError(f"ddpm runs all {DIFFUSION_STEPS} steps, got steps={self.steps}")
            return
        low = 1 if self.kind == "ddim" else 2  # a respaced schedule needs both ends
        if not isinstance(self.steps, int) or not low <= self.steps <= DIFFUSION_STEPS:
            raise WorkloadError(f"{self.kind} steps must be an integer in [{low}, {DIFFUSION_STEPS}], "
                                f"got {self.steps!r}")
        if not 0.0 <= self.eta <= 1.0:  # also refuses NaN
            raise WorkloadError(f"eta must be in [0, 1], got {self.eta}")

    @classmethod
    def forward(cls, timestep: int = DEFAULT_TIMESTEP, *, batch_size: int = 1, seed: int = 0) -> Workload:
        return cls("forward", timestep=timestep, batch_size=batch_size, seed=seed)

    @classmethod
    def ddim(cls, steps: int = DEFAULT_STEPS["ddim"], *, eta: float = 0.0, batch_size: int = 1,
             seed: int = 0) -> Workload:
        return cls("ddim", steps=steps, eta=eta, batch_size=batch_size, seed=seed)

    @classmethod
    def ddpm(cls, *, batch_size: int = 1, seed: int = 0) -> Workload:
        return cls("ddpm", batch_size=batch_size, seed=seed)

    @classmethod
    def respaced(cls, steps: int = DEFAULT_STEPS["ddpm-respaced"], *, batch_size: int = 1, seed: int = 0) -> Workload:
        return cls("ddpm-respaced", steps=steps, batch_size=batch_size, seed=seed)

    @property
    def model_calls(self) -> int:
        """Model calls (diffusion steps) per run: 1 for a forward."""
        return 1 if self.kind == "forward" else int(self.steps or 0)

    @property
    def is_sampling(self) -> bool:
        return self.kind != "forward"

    def image_shape(self, config: ImageConfig) -> tuple[int, int, int, int]:
        """(B, C, H, W) of the noise a model with ``config`` starts from: ``batch_size`` images of its size."""
        return (self.batch_size, config.in_channels, config.image_size, config.image_size)

    def sampler(self) -> str:
        """The sampler in words, e.g. ``DDIM 50 steps, eta 1`` (``one forward at t=500`` for a forward)."""
        if self.kind == "forward":
            return f"one forward at t={self.timestep}"
        if self.kind == "ddim":
            return f"DDIM {self.steps} steps, eta {self.eta:g}"
        if self.kind == "ddpm":
            return f"DDPM {self.steps} steps"
        return f"respaced DDPM {self.steps} steps, learned variance"

    def label(self) -> str:
        """The workload in words, e.g. ``DDIM 50 steps, eta 0, batch 1, seed 0``."""
        return f"{self.sampler()}, batch {self.batch_size}, seed {self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Workload:
        """The inverse of :meth:`to_dict`: every key, no other.

        Raises:
            WorkloadError: an unknown key, or a missing one (a record written before workloads carried
                ``batch_size`` and ``seed``; profile it again to read it).
        """
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise WorkloadError(f"unknown workload keys {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        missing = [k for k in known if k not in data]
        if missing:
            raise WorkloadError(f"workload {data} lacks {', '.join(missing)}: a record of an older format, which "
                                "nothing reads; profile the model again (sdit profile --json)")
        return cls(**data)
