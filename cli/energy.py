"""``sdit energy TARGET``: estimated energy from op counts, and measured energy (GPU or CPU) of the same workload.

A thin wrapper over :func:`profiling.compare.compare`: the target (and ``--baseline``) are loaded
once, one workload is profiled, estimated under the chosen conventions and, with ``--measure``,
measured; the output names that workload.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from cli.common import (
    DATA_ERROR,
    INTERNAL_ERROR,
    SditCommand,
    check_number,
    check_outputs_or_fail,
    command_output,
    echo,
    fail,
    load_target_or_fail,
    progress_option,
    quiet_option,
    status,
)
from cli.options import (
    batch_size_option,
    device_from_option,
    device_option,
    eta_option,
    method_option,
    sample_steps_option,
    seed_option,
    timestep_option,
    workload_from_options,
)
from profiling.compare import MEASURE_FAILED, SWEEP_RATES, Comparison, TargetResult, compare
from profiling.conventions import COUNTING_CONVENTIONS, DEFAULT_CONVENTIONS
from profiling.counter import UnknownNeuronError, UnsupportedOpError
from profiling.energy import (
    DEFAULT_COSTS,
    DEFAULT_MEMORY,
    MEMORY_PRESETS,
    CostsError,
    estimate_energy,
    firing_rate_sweep,
    load_costs,
    with_memory,
    with_overrides,
)
from profiling.meters import METER_KINDS
from reports import terminal
from reports.study import study_from_comparison
from sdit.artifacts import is_stdout, write_json

__all__ = ["SWEEP_RATES", "energy_cmd", "register"]


def energy_cmd(
    target: str = typer.Argument(..., help="Preset name or checkpoint path."),
    costs_spec: str = typer.Option(DEFAULT_COSTS, "--costs", help="Energy constants: a preset or a TOML file."),
    e_mac_pj: float | None = typer.Option(None, "--e-mac-pj", min=0, help="Override pJ per MAC."),
    e_ac_pj: float | None = typer.Option(None, "--e-ac-pj", min=0, help="Override pJ per AC."),
    e_mem_pj: float | None = typer.Option(None, "--e-mem-pj-per-byte", min=0, help="Add a memory term."),
    e_neuron_pj: float | None = typer.Option(None, "--e-neuron-pj", min=0, help="Add a neuron-update term."),
    memory: str | None = typer.Option(None, "--memory", help=f"Add the memory term of a preset "
                                      f"({', '.join(MEMORY_PRESETS)}; 'default' = {DEFAULT_MEMORY}); off unless set."),
    conventions: list[str] = typer.Option(list(DEFAULT_CONVENTIONS), "--convention",
                                          help=f"Counting convention(s): {', '.join(COUNTING_CONVENTIONS)}."),
    method: str = method_option(),
    sample_steps: int | None = sample_steps_option(),
    eta: float | None = eta_option(),
    timestep: int | None = timestep_option(),
    seed: int = seed_option(),
    batch_size: int = batch_size_option(),
    baseline: str | None = typer.Option(None, "--baseline", help="Preset or checkpoint to break even with."),
    measure: bool = typer.Option(False, "--measure",
                                 help="Also measure the energy of the same workload (see --meter)."),
    device: str | None = device_option("the model runs on for --measure (counting runs on the CPU)"),
    meter: str = typer.Option("auto", "--meter", help="Meter for --measure: auto (NVML on a GPU, RAPL on the "
                              "CPU), nvml, or cpu (RAPL: CPU packages only)."),
    min_window_s: float = typer.Option(1.0, "--min-window-s", min=0.0, help="Shortest measured window."),
    idle_s: float = typer.Option(5.0, "--idle-s", min=0.0, help="Seconds of idle-power measurement."),
    json_path: Path | None = typer.Option(
        None, "--json", help="Write estimated and measured energy as JSON ('-': stdout)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --json if it exists."),
    quiet: bool = quiet_option(),
    progress: bool | None = progress_option("counting and measuring a sampling run"),
) -> None:
    """Estimate energy per image from op counts; with --measure, measure the same workload too (NVML or RAPL).

    Example: sdit energy sdit-small --baseline dit-small --sample-steps 20 --measure --json energy.json
    """
    with command_output(quiet, progress):
        _energy(target, costs_spec, e_mac_pj, e_ac_pj, e_mem_pj, e_neuron_pj, memory, conventions, batch_size,
                timestep, sample_steps, method, eta, seed, baseline, measure, device, meter, min_window_s, idle_s,
                json_path, overwrite, quiet)


def _energy(target: str, costs_spec: str, e_mac_pj: float | None, e_ac_pj: float | None, e_mem_pj: float | None,
            e_neuron_pj: float | None, memory: str | None, conventions: list[str], batch_size: int,
            timestep: int | None, sample_steps: int | None, method: str, eta: float | None, seed: int,
            baseline: str | None, measure: bool, device: str | None, meter: str, min_window_s: float, idle_s: float,
            json_path: Path | None, overwrite: bool, quiet: bool) -> None:
    workload = workload_from_options(method, sample_steps, eta, timestep, batch_size, seed)
    device = device_from_option(device)
    for option, value in (("--e-mac-pj", e_mac_pj), ("--e-ac-pj", e_ac_pj), ("--e-mem-pj-per-byte", e_mem_pj),
                          ("--e-neuron-pj", e_neuron_pj)):
        check_number(option, value, 0, 1e9)
    check_number("--min-window-s", min_window_s, 0, 3600)
    check_number("--idle-s", idle_s, 0, 3600)
    if meter not in METER_KINDS:
        fail(f"--meter {meter!r}: valid meters are {', '.join(METER_KINDS)}")
    check_outputs_or_fail({"--json": json_path}, overwrite, stdout_ok=("--json",))
    try:
        costs = with_overrides(load_costs(costs_spec), e_mac_pj=e_mac_pj, e_ac_pj=e_ac_pj,
                               e_mem_pj_per_byte=e_mem_pj, e_neuron_update_pj=e_neuron_pj)
        costs = with_memory(costs, DEFAULT_MEMORY if memory == "default" else memory)
    except CostsError as err:
        fail(str(err))
    unknown = [c for c in conventions if c not in COUNTING_CONVENTIONS]
    if unknown:
        fail(f"unknown convention {unknown[0]!r}; known: {', '.join(COUNTING_CONVENTIONS)}")
    loaded = load_target_or_fail(target, "spikes and ACs are near zero")
    base = load_target_or_fail(baseline, "its counts come from untrained weights") if baseline else None
    try:
        study = compare([loaded] if base is None else [loaded, base], workload, costs=[costs],
                        conventions=list(dict.fromkeys(conventions)), measure=measure, device=device,
                        min_window_s=min_window_s, idle_s=idle_s, meter_kind=meter, progress=status)
    except (UnsupportedOpError, UnknownNeuronError) as err:
        fail(str(err), DATA_ERROR)
    failed = any((t.measured_reason or "").startswith(MEASURE_FAILED) for t in study.targets)
    result = summary(study)

    _print(study, result, Console(stderr=is_stdout(json_path), quiet=quiet and is_stdout(json_path)))
    if json_path is not None:
        write_json(json_path, result, overwrite=overwrite)
        echo(f"wrote {json_path}", err=is_stdout(json_path))
    if failed:  # the meter broke mid-measurement: not the user's input
        raise typer.Exit(INTERNAL_ERROR)


def summary(study: Comparison) -> dict[str, Any]:
    """The JSON ``sdit energy`` writes: the first target's figures under the first convention's
    preset (the keys this command always wrote), plus the whole comparison under ``comparison``."""
    main = study.targets[0]
    costs = study.costs[0]
    legacy = estimate_energy(main.profile, costs)
    be = None
    if len(study.targets) > 1:
        rows = [b for b in study.break_even if b.model == main.name and b.costs == costs.name]
        paper = next((b for b in rows if b.convention == "paper"), rows[0] if rows else None)
        base = study.targets[1]
        base_j = base.estimate(costs.name, next(iter(study.conventions))).total_j
        be = {"baseline": base.name, "baseline_j": base_j,
              "firing_rate": None if paper is None else paper.firing_rate,
              "convention": None if paper is None else paper.convention,
              "by_convention": {b.convention: b.firing_rate for b in rows}}
    return {
        "target": main.name,
        "workload": study.workload.to_dict(),
        "workload_label": study.workload.label(),
        "batch_size": study.workload.batch_size,
        "costs": costs.to_dict(),
        "estimated": {**legacy.per_image, "total_j": legacy.total_j},
        "estimated_per_step": legacy.per_step,
        "estimated_layers": legacy.layers,
        "by_convention": {e.convention: e.estimate.per_image for e in main.estimates if e.costs == costs.name},
        "firing_rate_sweep": firing_rate_sweep(main.profile, costs, SWEEP_RATES),
        "break_even": be,
        "conventions": {"unit": "joules per image over the workload", **main.profile.conventions},
        "measured": main.measured,
        "measured_reason": main.measured_reason,
        "baseline_measured": study.targets[1].measured if len(study.targets) > 1 else None,
        "baseline_measured_reason": study.targets[1].measured_reason if len(study.targets) > 1 else None,
        "comparison": study.to_dict(),
    }


def _uj(value: float | None, undefined: str) -> str:
    return undefined if value is None else f"{value * 1e6:,.3f}"


def _print(study: Comparison, result: dict[str, Any], console: Console) -> None:
    costs = study.costs[0]
    what = study.workload.label()
    for t in study.targets:
        _print_target(t, costs, study, console)
    terms = "; ".join(f"{term}: {text}" for term, text in costs.terms().items())
    console.print(f"terms of {costs.name}: {terms}", soft_wrap=True)
    console.print(f"constants: {costs.source} [{costs.evidence}, {costs.scope}, {costs.process or 'node not stated'}]",
                  soft_wrap=True)
    main = study.targets[0]
    for b in (b for b in study.break_even if b.model == main.name):
        text = b.reason if b.firing_rate is None else f"{b.firing_rate:.2%}"
        console.print(f"break-even firing rate vs {b.baseline} ({_uj(b.baseline_j, 'undefined')} uJ/image), "
                      f"{b.convention} convention, {b.costs}, {what}: {text}", soft_wrap=True)
    missing = [t for t in study.targets if t.measured is None]
    if missing and len(missing) == len(study.targets) and len({t.measured_reason for t in missing}) == 1:
        console.print(f"measured energy unavailable: {main.measured_reason}", soft_wrap=True)
    else:  # the target and its baseline are measured alike; say which one failed
        for t in missing:
            console.print(f"measured energy of {t.name} unavailable: {t.measured_reason}", soft_wrap=True)
    for t in (t for t in study.targets if t.measured is not None):
        m = t.measured
        console.print(f"measured {t.name}: {m['energy_j_per_image']:.6g} J/image ({what}; above idle "
                      f"{m['energy_above_idle_j_per_image']:.6g} J/image; {m['method']}, window {m['window_s']:.2f} s, "
                      f"{m['repeats']} repeats, idle {m['idle_power_w']:.1f} W, {m['device']}; "
                      f"{m.get('meter', 'NVML')})",
                      soft_wrap=True)


def _print_target(t: TargetResult, costs: Any, study: Comparison, console: Console) -> None:
    """The target's energy by term under each convention: the table of reports.tables.energy_terms_table."""
    view = study_from_comparison(study, headline_preset=costs.name)
    console.out(terminal.energy_terms_text(view, t.name, costs.name, console.width), end="", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("energy", cls=SditCommand)(energy_cmd)
