"""The sampler and workload options every command shares, with one set of defaults, and the Workload they name.

``sdit profile``, ``energy``, ``compare``, ``sample`` and ``evaluate`` declare these options through the
functions below (a fresh ``typer.Option`` per command) and turn them into a :class:`~sdit.workload.Workload`
with :func:`workload_from_options`, so one command line names one workload in every command:

- ``--method``: ``ddim`` (default), ``ddpm`` (all 1000 ancestral steps), ``ddpm-respaced`` (the authors' sampler:
  ancestral DDPM over respaced steps with a learned-sigma model's variance) or, where a command counts or
  measures rather than draws images, ``forward`` (one model call at ``--timestep``).
- ``--sample-steps``: model calls of the run; DDIM 50 and respaced DDPM 250 unless given; DDPM's are 1000.
- ``--eta``: DDIM's noise scale, 1 unless given: DDPM's variance at the chosen steps, with which the shipped
  checkpoints sample cleanly and with which their quality was measured (DDIM 50 steps, eta 1).
- ``--timestep``: a forward's diffusion timestep, 500 unless given.
- ``--seed``: 0. ``--batch-size``: images per model call. ``--device``: cuda when CUDA is available, else cpu.

An option that does not apply to the method (``--eta`` of a DDPM run, ``--timestep`` of a sampling run,
``--sample-steps`` of a forward) is refused in one line, never ignored.
"""

from __future__ import annotations

from typing import Any

import typer

from cli.common import MAX_IMAGES, WORKLOAD_PANEL, check_device, check_number, check_seed, fail
from sdit.workload import (
    DEFAULT_STEPS,
    DEFAULT_TIMESTEP,
    DIFFUSION_STEPS,
    SAMPLERS,
    WORKLOAD_KINDS,
    Workload,
    WorkloadError,
)

DEFAULT_METHOD = "ddim"
DEFAULT_ETA = 1.0  # DDIM's noise scale when --eta is not given (see the module docstring)


def method_option(forward: bool = True) -> Any:
    """``--method``; ``forward`` among its choices only where the command counts or measures (``forward``)."""
    also = ", or forward (one model call at --timestep)" if forward else ""
    return typer.Option(DEFAULT_METHOD, "--method", metavar="NAME", rich_help_panel=WORKLOAD_PANEL,
                        help=f"Sampler: ddim (default), ddpm (all {DIFFUSION_STEPS} ancestral steps), ddpm-respaced "
                        "(the authors' sampler: ancestral DDPM over --sample-steps respaced steps with the model's "
                        f"learned variance){also}.")


def sample_steps_option() -> Any:
    return typer.Option(None, "--sample-steps", show_default=False, rich_help_panel=WORKLOAD_PANEL,
                        help=f"Model calls of the sampling run: DDIM steps (default {DEFAULT_STEPS['ddim']}) or "
                        f"respaced DDPM steps (default {DEFAULT_STEPS['ddpm-respaced']}); DDPM runs all "
                        f"{DIFFUSION_STEPS}.")


def eta_option() -> Any:
    return typer.Option(None, "--eta", show_default=False, rich_help_panel=WORKLOAD_PANEL,
                        help=f"DDIM noise scale in [0, 1] (default {DEFAULT_ETA:g}: DDPM's variance at the chosen "
                        "steps, with which the shipped checkpoints' quality was measured; 0: deterministic). "
                        "DDIM only.")


def timestep_option() -> Any:
    return typer.Option(None, "--timestep", show_default=False, rich_help_panel=WORKLOAD_PANEL,
                        help=f"Diffusion timestep of --method forward (default {DEFAULT_TIMESTEP}).")


def seed_option(also: str = "") -> Any:
    """``--seed``; ``also`` names what else the command draws with it."""
    return typer.Option(0, "--seed", rich_help_panel=WORKLOAD_PANEL,
                        help=f"Seed of the initial noise (and of every step's noise of a stochastic sampler{also}).")


def batch_size_option(default: int = 1, text: str = "Images per model call.") -> Any:
    """``--batch-size``: images per model call (1 unless a command draws many images, as ``evaluate`` does)."""
    return typer.Option(default, "--batch-size", rich_help_panel=WORKLOAD_PANEL, help=text)


def device_option(what: str = "the model runs on", panel: str = WORKLOAD_PANEL) -> Any:
    return typer.Option(None, "--device", show_default=False, rich_help_panel=panel,
                        help=f"torch device {what} (cpu, cuda, cuda:1; default: cuda when CUDA is available, "
                        "else cpu).")


def device_from_option(device: str | None) -> str:
    """The ``--device`` value as a checked torch device string; by default cuda when CUDA is available, else cpu."""
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return check_device("--device", device)


def workload_from_options(method: str, sample_steps: int | None, eta: float | None, timestep: int | None,
                          batch_size: int, seed: int, *, forward: bool = True) -> Workload:
    """The workload the shared options name (``None``: the option was not given); exit 2 with one line when
    they do not name one. ``forward``: whether the command takes ``--method forward``."""
    kinds = WORKLOAD_KINDS if forward else SAMPLERS
    if method not in kinds:
        fail(f"--method must be one of {', '.join(kinds)}, got {method!r}")
    if sample_steps == 0:
        fail("--sample-steps 0 names no sampling run; count one forward with --method forward (and --timestep T)")
    check_number("--sample-steps", sample_steps, 1, DIFFUSION_STEPS)
    check_number("--eta", eta, 0, 1)
    check_number("--timestep", timestep, 0, DIFFUSION_STEPS - 1)
    check_number("--batch-size", batch_size, 1, MAX_IMAGES)
    check_seed("--seed", seed)
    if method == "forward":
        if sample_steps is not None or eta is not None:
            fail(f"{'--sample-steps' if sample_steps is not None else '--eta'} applies to a sampling run, not to "
                 "--method forward")
        return Workload.forward(DEFAULT_TIMESTEP if timestep is None else timestep, batch_size=batch_size, seed=seed)
    if timestep is not None:
        fail(f"--timestep applies to --method forward; a {method} run visits its own timesteps")
    if eta is not None and method != "ddim":
        fail(f"--eta applies to DDIM only; {method}'s noise is fixed")
    steps = DEFAULT_STEPS[method] if sample_steps is None else sample_steps
    try:
        return Workload(method, steps=steps, eta=(DEFAULT_ETA if eta is None else eta) if method == "ddim" else 0.0,
                        batch_size=batch_size, seed=seed)
    except WorkloadError as err:
        fail(f"--method {method} --sample-steps {steps}: {err}")


def check_meter(meter: str) -> str:
    """The ``--meter`` value, or exit 2 with one line naming the valid ones."""
    from profiling.meters import METER_KINDS

    if meter not in METER_KINDS:
        fail(f"--meter {meter!r}: valid meters are {', '.join(METER_KINDS)}")
    return meter


def label_option() -> Any:
    """``--label NAME``: a target's short name in the report and the terminal, one per target, in order."""
    return typer.Option([], "--label", metavar="NAME", show_default=False,
                        help="The short name of a target in the report and its tables (repeat: one per target, in "
                        "order; default: the preset, or the checkpoint's preset and training step, e.g. "
                        "sdit-small@21500).")


def meter_option() -> Any:
    """``--meter``: which energy meter ``--measure`` reads (checked by :func:`check_measure_options`)."""
    return typer.Option("auto", "--meter", help="Meter for --measure: auto (NVML on a GPU, RAPL on the CPU), nvml, "
                        "or cpu (RAPL: CPU packages only).")


def min_window_option() -> Any:
    return typer.Option(1.0, "--min-window-s", min=0.0, help="Shortest measured window.")


def idle_option() -> Any:
    return typer.Option(5.0, "--idle-s", min=0.0, help="Seconds of idle-power measurement.")


def check_measure_options(meter: str, min_window_s: float, idle_s: float) -> None:
    """Exit 2 with one line on a measurement option out of range or a meter that does not exist."""
    check_number("--min-window-s", min_window_s, 0, 3600)
    check_number("--idle-s", idle_s, 0, 3600)
    check_meter(meter)
