"""``sdit energy TARGET``: estimated energy from op counts, and measured energy (GPU or CPU) of the same workload.

A thin wrapper over :func:`profiling.compare.compare`: the target (and ``--baseline``) are loaded
once, one workload is profiled, estimated under the chosen conventions and, with ``--measure``,
measured; the output names that workload.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from cli.common import (
    DATA_ERROR,
    ENERGY_PANEL,
    INTERNAL_ERROR,
    MEASURE_PANEL,
    OUTPUT_PANEL,
    SditCommand,
    check_number,
    check_outputs_or_fail,
    command_output,
    echo,
    fail,
    in_panels,
    load_target_or_fail,
    progress_option,
    quiet_option,
    status,
)
from cli.options import (
    batch_size_option,
    check_measure_options,
    device_from_option,
    device_option,
    eta_option,
    idle_option,
    meter_option,
    method_option,
    min_window_option,
    sample_steps_option,
    seed_option,
    timestep_option,
    workload_from_options,
)
from profiling.compare import MEASURE_FAILED, compare, verdict_matrix
from profiling.conventions import COUNTING_CONVENTIONS, DEFAULT_CONVENTIONS
from profiling.counter import UnknownNeuronError, UnsupportedOpError
from profiling.energy import (
    DEFAULT_COSTS,
    DEFAULT_MEMORY,
    MEMORY_MODELS,
    MEMORY_PRESETS,
    CostsError,
    load_costs,
    with_memory,
    with_overrides,
)
from profiling.study import energy_summary, short_labels
from reports import terminal
from reports.study import study_from_comparison
from sdit.artifacts import is_stdout, write_json

__all__ = ["energy_cmd", "register"]


def energy_cmd(
    target: str = typer.Argument(..., help="Preset name or checkpoint path."),
    costs_spec: str = typer.Option(DEFAULT_COSTS, "--costs", help="Energy constants: a preset or a TOML file."),
    e_mac_pj: float | None = typer.Option(None, "--e-mac-pj", min=0, help="Override pJ per MAC."),
    e_ac_pj: float | None = typer.Option(None, "--e-ac-pj", min=0, help="Override pJ per AC."),
    e_mem_pj: float | None = typer.Option(None, "--e-mem-pj-per-byte", min=0, help="Add a memory term."),
    e_neuron_pj: float | None = typer.Option(None, "--e-neuron-pj", min=0, help="Add a neuron-update term."),
    memory: str | None = typer.Option(None, "--memory", help=f"Add a memory term: MODEL[:PRESET], models "
                                      f"{', '.join(MEMORY_MODELS)}; presets {', '.join(MEMORY_PRESETS)} "
                                      "(a bare preset: "
                                      f"operand-once at it; 'default' = {DEFAULT_MEMORY}); off unless set "
                                      "(docs/memory.md)."),
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
    meter: str = meter_option(),
    min_window_s: float = min_window_option(),
    idle_s: float = idle_option(),
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
        for option, value in (("--e-mac-pj", e_mac_pj), ("--e-ac-pj", e_ac_pj), ("--e-mem-pj-per-byte", e_mem_pj),
                              ("--e-neuron-pj", e_neuron_pj)):
            check_number(option, value, 0, 1e9)
        check_measure_options(meter, min_window_s, idle_s)
        check_outputs_or_fail({"--json": json_path}, overwrite, stdout_ok=("--json",))
        try:
            costs = with_overrides(load_costs(costs_spec), e_mac_pj=e_mac_pj, e_ac_pj=e_ac_pj,
                                   e_mem_pj_per_byte=e_mem_pj, e_neuron_update_pj=e_neuron_pj)
            costs = with_memory(costs, memory)
        except CostsError as err:
            fail(str(err))
        unknown = [c for c in conventions if c not in COUNTING_CONVENTIONS]
        if unknown:
            fail(f"unknown convention {unknown[0]!r}; known: {', '.join(COUNTING_CONVENTIONS)}")
        workload = workload_from_options(method, sample_steps, eta, timestep, batch_size, seed)
        device = device_from_option(device)
        loaded = load_target_or_fail(target, "spikes and ACs are near zero")
        base = load_target_or_fail(baseline, "its counts come from untrained weights") if baseline else None
        try:
            study = compare([loaded] if base is None else [loaded, base], workload, costs=[costs],
                            conventions=list(dict.fromkeys(conventions)), measure=measure, device=device,
                            min_window_s=min_window_s, idle_s=idle_s, meter_kind=meter, progress=status)
        except (UnsupportedOpError, UnknownNeuronError) as err:
            fail(str(err), DATA_ERROR)
        failed = any((t.measured_reason or "").startswith(MEASURE_FAILED) for t in study.targets)
        result = energy_summary(study)

        console = Console(stderr=is_stdout(json_path), quiet=quiet and is_stdout(json_path))
        labels = short_labels([loaded] if base is None else [loaded, base])
        view = study_from_comparison(study, labels=labels)
        for model in view.models:
            console.out(terminal.energy_terms_text(view, model.label, view.headline_preset, console.width), end="",
                        highlight=False)
        console.out(terminal.energy_text(study, labels, console.width), end="", highlight=False)
        matrix = verdict_matrix(study) if base is not None else []
        if matrix:
            console.out(terminal.verdict_text(matrix, workload.label(), console.width, labels=labels,
                                              untrained=terminal.untrained_of(study)), end="", highlight=False)
        result["verdict_matrix"] = [v.to_dict() for v in matrix]
        result["unassigned_memory"] = study.targets[0].estimates[0].estimate.unassigned
        if json_path is not None:
            write_json(json_path, result, overwrite=overwrite)
            echo(f"wrote {json_path}", err=is_stdout(json_path))
        if failed:  # the meter broke mid-measurement: not the user's input
            raise typer.Exit(INTERNAL_ERROR)


# Help panels of the command's options (cli.common.in_panels); the rest are its main "Options".
PANELS = {ENERGY_PANEL: ("--costs", "--e-mac-pj", "--e-ac-pj", "--e-mem-pj-per-byte", "--e-neuron-pj", "--memory",
                         "--convention"),
          MEASURE_PANEL: ("--measure", "--meter", "--min-window-s", "--idle-s", "--device"),
          OUTPUT_PANEL: ("--json", "--overwrite")}


def register(app: typer.Typer) -> None:
    app.command("energy", cls=SditCommand)(in_panels(energy_cmd, PANELS))
