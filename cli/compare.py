"""``sdit compare [TARGET ...]``: two or more models over one workload, as an HTML energy report.

Options, then one call: :func:`profiling.study.run_study` makes the finished study, :mod:`reports`
lays it out and writes the report directory.
"""

from __future__ import annotations

from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import typer

from cli.common import (
    DATA_ERROR,
    ENERGY_PANEL,
    MAX_IMAGES,
    MEASURE_PANEL,
    OUTPUT_PANEL,
    SditCommand,
    check_number,
    check_outputs_or_fail,
    command_line,
    command_output,
    fail,
    in_panels,
    load_target_or_fail,
    note,
    present_comparison,
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
    label_option,
    meter_option,
    method_option,
    min_window_option,
    sample_steps_option,
    seed_option,
    timestep_option,
    workload_from_options,
)
from profiling.conventions import COUNTING_CONVENTIONS, DEFAULT_CONVENTIONS
from profiling.counter import UnknownNeuronError, UnsupportedOpError
from profiling.energy import COST_PRESETS, MEMORY_MODELS
from profiling.study import EVALUATIONS, StudyInputError, run_study, short_labels, study_inputs
from reports.report import ReportDirError, claim_report_dir

DEFAULT_TARGETS = ["checkpoints/sdit-small-fmnist", "checkpoints/dit-small-fmnist"]


def compare_cmd(
    targets: list[str] | None = typer.Argument(
        None, help="Two or more presets or checkpoints (default: the shipped sdit-small and dit-small)."),
    labels: list[str] = label_option(),
    method: str = method_option(),
    sample_steps: int | None = sample_steps_option(),
    eta: float | None = eta_option(),
    timestep: int | None = timestep_option(),
    seed: int = seed_option(),
    batch_size: int = batch_size_option(),
    costs: list[str] = typer.Option(
        list(COST_PRESETS), "--costs", help="Cost presets or TOML files (repeat); the first is the headline."),
    conventions: list[str] = typer.Option(
        ["paper", *(c for c in DEFAULT_CONVENTIONS if c != "paper")], "--convention",
        help=f"Conventions to compare (repeat; the first is the headline): {', '.join(COUNTING_CONVENTIONS)}."),
    memory: str | None = typer.Option(
        None, "--memory", help=f"Memory term of every preset: MODEL[:PRESET], models {', '.join(MEMORY_MODELS)} "
        "(docs/memory.md); off unless set. The verdict matrix shows every memory model either way."),
    samples: int = typer.Option(16, "--samples", min=0, help="Images in each model's sample grid (0: none)."),
    measure: bool = typer.Option(False, "--measure", help="Also measure the energy of sampling (see --meter)."),
    device: str | None = device_option("the models run on for --measure (counting and the sample grids run on "
                                       "the CPU)"),
    meter: str = meter_option(),
    min_window_s: float = min_window_option(),
    idle_s: float = idle_option(),
    out: Path = typer.Option(Path("out/compare"), "--out", help="Directory for report.html, comparison.json, CSVs."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing report in --out (and --json)."),
    json_path: Path | None = typer.Option(
        None, "--json", help="Also write the comparison (the JSON of --out's comparison.json) to this file ('-': "
        "stdout, the tables then on stderr)."),
    quality: list[Path] = typer.Option(
        [], "--quality", help="An `sdit evaluate --json` file of one of the targets (repeat): its FID, KID and "
        "precision / recall go in the report's quality section, beside each checkpoint's held-out eps-MSE."),
    shipped_quality: bool = typer.Option(
        True, "--shipped-quality/--no-shipped-quality", help="Include the evaluations a shipped checkpoint "
        f"directory holds ({EVALUATIONS}/*.json; a --quality file of the same model and features replaces one)."),
    quiet: bool = quiet_option(),
    progress: bool | None = progress_option("counting, sampling and measuring"),
) -> None:
    """Compare models over one workload and write a self-contained HTML energy report.

    Example: sdit compare checkpoints/sdit-small-fmnist checkpoints/dit-small-fmnist --sample-steps 20 --out out/cmp
    """
    with command_output(quiet, progress), ExitStack() as held:
        workload = workload_from_options(method, sample_steps, eta, timestep, batch_size, seed)
        device = device_from_option(device)
        check_number("--samples", samples, 0, MAX_IMAGES)
        check_measure_options(meter, min_window_s, idle_s)
        check_outputs_or_fail({"--json": json_path}, overwrite, stdout_ok=("--json",))
        try:
            claim_report_dir(held, out, overwrite, json_path)  # held until the report is written
            targets, conventions, presets = study_inputs(targets or DEFAULT_TARGETS, conventions, costs, memory)
            loaded = [load_target_or_fail(t, "its counts come from untrained weights") for t in targets]
            short_labels(loaded, labels)  # one line, before any work
        except (ReportDirError, StudyInputError) as err:
            fail(str(err))
        try:
            finished = run_study(loaded, workload, costs=presets, conventions=conventions, command=command_line(),
                                 created=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"), samples=samples,
                                 quality=quality, shipped_quality=shipped_quality, measure=measure,
                                 device=device, min_window_s=min_window_s, idle_s=idle_s, meter_kind=meter,
                                 labels=labels, progress=status, note=note)
        except (StudyInputError, UnsupportedOpError, UnknownNeuronError) as err:
            fail(str(err), DATA_ERROR)
        present_comparison(finished, out, json_path, overwrite, quiet)


# Help panels of the command's options (cli.common.in_panels); the rest are its main "Options".
PANELS = {ENERGY_PANEL: ("--costs", "--convention", "--memory"),
          MEASURE_PANEL: ("--measure", "--meter", "--min-window-s", "--idle-s", "--device"),
          OUTPUT_PANEL: ("--out", "--overwrite", "--json")}


def register(app: typer.Typer) -> None:
    app.command("compare", cls=SditCommand)(in_panels(compare_cmd, PANELS))
