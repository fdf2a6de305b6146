"""Measured GPU energy per image of DDIM sampling: sdit-small, dit-small, sdit-mnist.

Measures with :class:`profiling.meters.NvmlMeter` (NVML total-energy counter, or
power polling where the GPU has none): idle power once, first, then for each
preset a window of repeated sampling runs lasting at least ``--min-window-s``.
Prints measured joules per image beside the estimated ones. On a machine without
a GPU it prints why nothing can be measured and exits 0.

Weights are freshly initialised (seed 0): the GPU's dense kernels cost the same
for any weights, spikes included, so no checkpoint is needed.

    .venv/bin/python bench/gpu_energy.py [--device cuda:0] [--batch-size 64] [--steps 50] [--json PATH]
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from profiling.energy import COST_PRESETS, estimate
from profiling.measure import WorkloadEnergy, measure_workload
from profiling.meters import PowerMeter, make_meter
from profiling.workloads import profile_forward
from sdit.artifacts import write_json
from sdit.heap import retain_freed_memory
from sdit.models import build_model
from sdit.workload import Workload

PRESETS = ("sdit-small", "dit-small", "sdit-mnist")

# (preset, batch_size, num_steps) -> estimated joules per image from the cost model.
EstimateJPerImage = Callable[[str, int, int], float]


@dataclass(frozen=True)
class BenchRow:
    """One preset: the measurement and, where a cost model is wired in, its estimate."""

    preset: str
    measured: WorkloadEnergy
    estimated_j_per_image: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "measured": self.measured.to_dict(),
            "estimated_j_per_image": self.estimated_j_per_image,
        }


def run_bench(
    meter: PowerMeter,
    device: torch.device,
    presets: Sequence[str] = PRESETS,
    batch_size: int = 64,
    num_steps: int = 50,
    min_window_s: float = 1.0,
    idle_s: float = 5.0,
    estimate_j_per_image: EstimateJPerImage | None = None,
) -> list[BenchRow]:
    """Measure DDIM sampling of each preset on ``device``; idle power once, before any model runs.

    Args:
        estimate_j_per_image: HOOK for the lead: the cost model's estimated joules
            per image for (preset, batch_size, num_steps). ``None`` leaves the
            estimated column "n/a".
    """
    meter.measure_idle_power_w(idle_s)
    rows = []
    for preset in presets:
        torch.manual_seed(0)
        model = build_model(preset).to(device)
        measured = measure_workload(model, Workload.ddim(num_steps, batch_size=batch_size), meter,
                                    min_window_s=min_window_s, idle_s=idle_s)
        estimated = (
            None if estimate_j_per_image is None else estimate_j_per_image(preset, batch_size, num_steps)
        )
        rows.append(BenchRow(preset, measured, estimated))
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def format_table(rows: Sequence[BenchRow]) -> str:
    """Fixed-width text table, one line per preset."""
    header = (
        f"{'preset':<12} {'batch':>5} {'steps':>5} {'repeats':>7} {'window_s':>8} {'mean_w':>7} "
        f"{'idle_w':>7} {'meas_j/img':>10} {'above_idle_j/img':>16} {'est_j/img':>10} {'meas/est':>8}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        r, m = row.measured, row.measured.measurement
        est = row.estimated_j_per_image
        lines.append(
            f"{row.preset:<12} {r.workload.batch_size:>5} {r.workload.model_calls:>5} {m.repeats:>7} {m.time_s:>8.2f} "
            f"{m.mean_power_w:>7.1f} {m.idle_power_w:>7.1f} {r.energy_j_per_image:>10.4g} "
            f"{r.energy_above_idle_j_per_image:>16.4g} "
            f"{'n/a' if est is None else format(est, '.4g'):>10} "
            f"{'n/a' if not est else format(r.energy_j_per_image / est, '.3g'):>8}"
        )
    return "\n".join(lines)


def estimated_j_per_image(preset: str, batch_size: int, num_steps: int) -> float:
    """Estimated compute energy (strict, 45nm-fp32) of ``num_steps`` forwards, per image.

    Counts one forward at t = 500 on the CPU (MACs do not vary across steps; with
    untrained weights spikes are ~0) and multiplies by the number of steps.
    """
    profile = profile_forward(build_model(preset), name=preset, batch_size=1, timestep=500)
    return num_steps * estimate(profile, COST_PRESETS["45nm-fp32"]).total_j


def main(argv: Sequence[str] | None = None) -> int:
    retain_freed_memory()  # as the sdit command does (sdit/heap.py; SDIT_HEAP_RETAIN=0: glibc's defaults)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--min-window-s", type=float, default=1.0)
    parser.add_argument("--idle-s", type=float, default=5.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    logging.getLogger("torch._library.triton").setLevel(logging.ERROR)  # CPU builds warn on import

    meter = make_meter(args.device)
    if not meter.available:
        print(f"measured energy unavailable: {meter.reason}")
        return 0
    device = torch.device(args.device)
    print(f"meter: {meter.description}; torch {torch.__version__}; DDIM {args.steps} steps, eta 0")
    with meter:
        rows = run_bench(
            meter,
            device,
            presets=args.presets,
            batch_size=args.batch_size,
            num_steps=args.steps,
            min_window_s=args.min_window_s,
            idle_s=args.idle_s,
            estimate_j_per_image=estimated_j_per_image,
        )
    print(format_table(rows))
    print("meas_j/img: whole-GPU energy per image, idle included; above_idle: less idle power x time")
    if args.json is not None:
        write_json(args.json, [row.to_dict() for row in rows], overwrite=True)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
