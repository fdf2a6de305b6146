"""``sdit profile TARGET``: per-layer MACs, ACs and spikes of one forward or a sampling run."""

from __future__ import annotations

import textwrap
from pathlib import Path

import typer
from rich.console import Console

from cli.common import (
    DATA_ERROR,
    MAX_IMAGES,
    SditCommand,
    check_device,
    check_number,
    check_outputs_or_fail,
    check_seed,
    command_output,
    echo,
    fail,
    load_target_or_fail,
    progress_option,
    quiet_option,
)
from profiling.compare import Comparison, compare_profiles
from profiling.counter import UnknownNeuronError, UnsupportedOpError
from profiling.energy import DEFAULT_COSTS, CostsError, load_costs
from profiling.records import Profile, Workload, WorkloadError
from profiling.workloads import profile_workload
from reports import terminal
from reports.study import study_from_comparison
from sdit.artifacts import is_stdout, write_bytes, write_json


def print_summary(profile: Profile, study_of_profile: Comparison, top: int, console: Console) -> None:
    """Totals per image, the spiking layers, then the ``top`` layers by energy: the tables of reports.tables."""
    study = study_from_comparison(study_of_profile, {profile.model: profile.model}, headline_convention="strict")
    console.out(terminal.totals_text(study, console.width), end="", highlight=False)
    terms = "; ".join(f"{term}: {text}" for term, text in study.presets[0].terms.items())
    text = textwrap.fill(f"terms of {study.headline_preset}: {terms}", width=max(console.width, 40),
                         subsequent_indent="  ", break_on_hyphens=False)
    console.out(text + "\n", end="", highlight=False)
    console.out(terminal.layer_tables(study, profile.model, "strict", top, console.width), end="", highlight=False)
    if profile.unsupported_ops:
        ops = ", ".join(f"{u['op']} x{u['count']}" for u in profile.unsupported_ops)
        console.print(f"[yellow]uncounted ops (no rule): {ops}[/yellow]")


def workload_from_options(method: str, timestep: int, sample_steps: int, eta: float, batch_size: int,
                          seed: int) -> Workload:
    """The workload the profile / energy options name: a forward at ``timestep`` unless ``sample_steps``
    is set or ``method`` is ddpm (then a sampling run; DDIM's default length is 50 steps)."""
    if method == "ddpm":
        if sample_steps not in (0, 1000):
            raise WorkloadError(f"--method ddpm runs all 1000 steps; drop --sample-steps {sample_steps}")
        return Workload("ddpm", eta=eta, batch_size=batch_size, seed=seed)
    if sample_steps:
        return Workload.ddim(sample_steps, eta=eta, batch_size=batch_size, seed=seed)
    if eta:
        raise WorkloadError("--eta applies to a sampling run; pass --sample-steps N (or --method ddpm)")
    return Workload.forward(timestep, batch_size=batch_size, seed=seed)


def profile_cmd(
    target: str = typer.Argument(..., help="Preset name or checkpoint (file, run directory or shipped directory)."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Images per model call."),
    timestep: int = typer.Option(500, "--timestep", min=0, max=999, help="Diffusion timestep of a single forward."),
    sample_steps: int = typer.Option(
        0, "--sample-steps", min=0, max=1000, help="Profile a whole DDIM run of this many steps instead."
    ),
    method: str = typer.Option("ddim", "--method", help="Sampler for --sample-steps: ddim or ddpm (1000 steps)."),
    eta: float = typer.Option(0.0, "--eta", help="DDIM noise scale of a sampling run: 0 deterministic, 1 DDPM-like."),
    seed: int = typer.Option(0, "--seed", help="Seed of the input noise."),
    json_path: Path | None = typer.Option(None, "--json", help="Write the whole profile as JSON ('-': stdout)."),
    csv_path: Path | None = typer.Option(None, "--csv", help="Write the per-layer table as CSV ('-': stdout)."),
    strict: bool = typer.Option(False, "--strict", help="Fail on any op no counting rule covers."),
    costs_spec: str = typer.Option(DEFAULT_COSTS, "--costs", help="Energy constants: a preset or a TOML file."),
    top: int = typer.Option(20, "--top", min=1, help="Layers to show in the summary."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --json / --csv files that exist."),
    device: str = typer.Option("cpu", "--device", help="torch device the counted model runs on (cpu, cuda)."),
    quiet: bool = quiet_option(),
    progress: bool | None = progress_option("a sampling run's steps"),
) -> None:
    """Count MACs, ACs and spikes per layer and per image.

    Example: sdit profile sdit-small --sample-steps 20 --json profile.json --csv layers.csv
    """
    with command_output(quiet, progress):
        _profile(target, batch_size, timestep, sample_steps, method, eta, seed, json_path, csv_path, strict,
                 costs_spec, top, overwrite, device, quiet)


def _profile(target: str, batch_size: int, timestep: int, sample_steps: int, method: str, eta: float, seed: int,
             json_path: Path | None, csv_path: Path | None, strict: bool, costs_spec: str, top: int,
             overwrite: bool, device: str, quiet: bool) -> None:
    if method not in ("ddim", "ddpm"):
        fail(f"--method must be ddim or ddpm, got {method!r}")
    check_number("--batch-size", batch_size, 1, MAX_IMAGES)
    check_seed("--seed", seed)
    check_outputs_or_fail({"--json": json_path, "--csv": csv_path}, overwrite, stdout_ok=("--json", "--csv"))
    to_stdout = is_stdout(json_path) or is_stdout(csv_path)  # the summary and notes go to stderr then
    try:
        costs = load_costs(costs_spec)
    except CostsError as err:
        fail(str(err))
    try:
        workload = workload_from_options(method, timestep, sample_steps, eta, batch_size, seed)
    except WorkloadError as err:
        fail(str(err))
    device = check_device("--device", device)
    loaded = load_target_or_fail(target, "spikes and ACs are near zero")
    console = Console(stderr=to_stdout, quiet=quiet and to_stdout)  # --quiet: nothing on stderr
    try:
        profile = profile_workload(loaded.model.to(device), workload, name=target, strict=strict, device=device)
    except (UnsupportedOpError, UnknownNeuronError) as err:
        fail(str(err), DATA_ERROR)
    study = compare_profiles([profile], [costs], ("strict", "paper"))
    (target,) = study.targets
    strict, paper = target.estimate(costs.name, "strict"), target.estimate(costs.name, "paper")
    print_summary(profile, study, top, console)
    if json_path is not None:
        energy = {"strict": strict.to_dict(), "paper": paper.to_dict()}
        write_json(json_path, {**profile.to_dict(), "energy": energy}, overwrite=overwrite)
        echo(f"wrote {json_path}", err=to_stdout)
    if csv_path is not None:
        frame = profile.to_dataframe()
        for key in ("macs", "acs"):
            frame[f"{key}_paper"] = [paper.layer_counts[name][key] for name in frame.index]
        columns = {"compute_j": (strict, "compute_j"), "compute_paper_j": (paper, "compute_j"),
                   "memory_j": (strict, "memory_j"), "neuron_j": (strict, "neuron_j")}
        for column, (result, key) in columns.items():
            frame[f"energy_{column}"] = [result.layers[name][key] for name in frame.index]
        write_bytes(csv_path, frame.to_csv().encode(), overwrite=overwrite)
        echo(f"wrote {csv_path}", err=to_stdout)


def register(app: typer.Typer) -> None:
    app.command("profile", cls=SditCommand)(profile_cmd)
