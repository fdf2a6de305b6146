"""``sdit energy TARGET``: estimated energy from op counts, and measured GPU energy beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from cli.common import DATA_ERROR, fail, load_target_or_fail
from cli.profile import workload_from_options
from profiling.counter import UnknownNeuronError, UnsupportedOpError
from profiling.energy import (
    DEFAULT_COSTS,
    CostsError,
    break_even_firing_rate,
    estimate_energy,
    firing_rate_sweep,
    load_costs,
    with_overrides,
)
from profiling.meters import MeterError, make_meter
from profiling.records import Workload
from profiling.workloads import profile_workload
from sdit.artifacts import write_json
from sdit.diffusion import Diffusion
from sdit.targets import load_target

SWEEP_RATES = [0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0]


def _measure(target: str, device: str, batch_size: int, steps: int, seed: int, min_window_s: float,
             idle_s: float) -> tuple[dict[str, Any] | None, str | None]:
    """Measured sampling energy on ``device``, or ``(None, reason)``."""
    from profiling.measure import measure_sampling

    meter = make_meter(device)
    if not meter.available:
        return None, meter.reason
    try:
        model = load_target(target, device=device).model
        result = measure_sampling(model, Diffusion(), batch_size, steps, meter, min_window_s=min_window_s,
                                  idle_s=idle_s, seed=seed)
    finally:
        meter.close()
    return result.to_dict(), None


def energy_cmd(
    target: str = typer.Argument(..., help="Preset name or checkpoint path."),
    costs_spec: str = typer.Option(DEFAULT_COSTS, "--costs", help="Energy constants: a preset or a TOML file."),
    e_mac_pj: float | None = typer.Option(None, "--e-mac-pj", min=0, help="Override pJ per MAC."),
    e_ac_pj: float | None = typer.Option(None, "--e-ac-pj", min=0, help="Override pJ per AC."),
    e_mem_pj: float | None = typer.Option(None, "--e-mem-pj-per-byte", min=0, help="Add a memory term."),
    e_neuron_pj: float | None = typer.Option(None, "--e-neuron-pj", min=0, help="Add a neuron-update term."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Images per model call."),
    timestep: int = typer.Option(500, "--timestep", min=0, max=999, help="Diffusion timestep of a single forward."),
    sample_steps: int = typer.Option(0, "--sample-steps", min=0, max=1000,
                                     help="Estimate a whole DDIM run of this many steps instead of one forward."),
    seed: int = typer.Option(0, "--seed", help="Seed of the input noise."),
    baseline: str | None = typer.Option(None, "--baseline", help="Preset or checkpoint to break even with."),
    measure: bool = typer.Option(False, "--measure", help="Also measure GPU energy of DDIM sampling (NVML)."),
    device: str = typer.Option("cuda:0", "--device", help="GPU for --measure."),
    measure_steps: int = typer.Option(50, "--measure-steps", min=1, max=1000, help="DDIM steps measured."),
    min_window_s: float = typer.Option(1.0, "--min-window-s", min=0.0, help="Shortest measured window."),
    idle_s: float = typer.Option(5.0, "--idle-s", min=0.0, help="Seconds of idle-power measurement."),
    json_path: Path | None = typer.Option(None, "--json", help="Write estimated and measured energy as JSON."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --json if it exists."),
) -> None:
    """Estimate energy per image from op counts; with --measure, measure it on a GPU too."""
    if json_path is not None and json_path.exists() and not overwrite:
        fail(f"{json_path} exists; pass --overwrite to replace it")
    try:
        costs = with_overrides(load_costs(costs_spec), e_mac_pj=e_mac_pj, e_ac_pj=e_ac_pj,
                               e_mem_pj_per_byte=e_mem_pj, e_neuron_update_pj=e_neuron_pj)
    except CostsError as err:
        fail(str(err))
    loaded = load_target_or_fail(target, "spikes and ACs are near zero")
    base = load_target_or_fail(baseline, "its counts come from untrained weights") if baseline else None
    try:
        workload = workload_from_options("ddim", timestep, sample_steps, 0.0, batch_size, seed)
        profile = profile_workload(loaded.model, workload, name=target)
        base_profile = None if base is None else profile_workload(base.model, workload, name=baseline)
    except (UnsupportedOpError, UnknownNeuronError) as err:
        fail(str(err), DATA_ERROR)
    estimate = estimate_energy(profile, costs)
    result: dict[str, Any] = {
        "target": target,
        "workload": profile.workload.to_dict(),
        "batch_size": batch_size,
        "costs": costs.to_dict(),
        "estimated": {**estimate.per_image, "total_j": estimate.total_j},
        "estimated_per_step": estimate.per_step,
        "estimated_layers": estimate.layers,
        "firing_rate_sweep": firing_rate_sweep(profile, costs, SWEEP_RATES),
        "break_even": None,
        "conventions": {"unit": "joules per image over the workload", **profile.conventions},
    }
    if base_profile is not None:
        base_j = estimate_energy(base_profile, costs).per_image["compute_j"] or 0.0
        result["break_even"] = {"baseline": baseline, "baseline_j": base_j,
                                "firing_rate": break_even_firing_rate(profile, costs, base_j)}

    measured, reason, failed = None, None, False
    if measure:
        try:
            measured, reason = _measure(target, device, batch_size, measure_steps, seed, min_window_s, idle_s)
        except MeterError as err:
            reason, failed = f"measurement failed: {err}", True
    else:
        reason = "not requested (pass --measure)"
    result["measured"] = measured
    result["measured_reason"] = reason

    _print(result, Console())
    if json_path is not None:
        write_json(json_path, result, overwrite=overwrite)
        typer.echo(f"wrote {json_path}")
    if failed:
        raise typer.Exit(DATA_ERROR)


def _print(result: dict[str, Any], console: Console) -> None:
    est, costs = result["estimated"], result["costs"]
    work = result["workload"]
    what = Workload.from_dict(work).label()
    table = Table(title=f"{result['target']}: estimated energy per image, {what} "
                        f"({costs['name']}: MAC {costs['e_mac_pj']} pJ, AC {costs['e_ac_pj']} pJ)")
    table.add_column("column")
    table.add_column("uJ / image", justify="right")
    table.add_column("convention")
    rows = [("MAC energy", "mac_j", "strict: MACs x e_mac"), ("AC energy", "ac_j", "strict: ACs x e_ac"),
            ("compute", "compute_j", "strict"), ("compute, paper conv.", "compute_paper_j", "fr x dense MACs as ACs"),
            ("memory", "memory_j", "operand bytes x e_mem"), ("neuron updates", "neuron_j", "updates x e_neuron")]
    for label, key, note in rows:
        value = est[key]
        table.add_row(label, "not set" if value is None else f"{value * 1e6:,.3f}", note)
    table.add_row("total", f"{est['total_j'] * 1e6:,.3f}", "compute (strict) + memory + neuron terms set")
    console.print(table)
    console.print(f"constants: {costs['source']}", soft_wrap=True)
    if result["break_even"] is not None:
        be = result["break_even"]
        rate = be["firing_rate"]
        text = "does not depend on firing rate" if rate is None else f"{rate:.2%}"
        console.print(f"break-even firing rate vs {be['baseline']} ({be['baseline_j'] * 1e6:,.3f} uJ/image, "
                      f"paper convention): {text}")
    if result["measured"] is None:
        console.print(f"measured energy unavailable: {result['measured_reason']}", soft_wrap=True)
    else:
        m = result["measured"]
        console.print(f"measured: {m['energy_j_per_image']:.6g} J/image over {m['num_steps']} DDIM steps "
                      f"(mean power {m['measurement']['mean_power_w']:.1f} W, idle "
                      f"{m['measurement']['idle_power_w']} W, {m['measurement']['repeats']} repeats)")


def register(app: typer.Typer) -> None:
    app.command("energy")(energy_cmd)
