"""``sdit profile TARGET``: per-layer MACs, ACs and spikes of one forward or a sampling run."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from cli.common import (
    DATA_ERROR,
    OUTPUT_PANEL,
    SditCommand,
    check_outputs_or_fail,
    command_output,
    echo,
    fail,
    in_panels,
    load_target_or_fail,
    progress_option,
    quiet_option,
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
from profiling.compare import Comparison, compare_profiles
from profiling.counter import UnknownNeuronError, UnsupportedOpError
from profiling.energy import DEFAULT_COSTS, CostsError, load_costs
from profiling.records import Profile
from profiling.study import short_labels
from profiling.workloads import profile_workload
from reports import terminal
from reports.study import study_from_comparison
from sdit.artifacts import is_stdout, write_bytes, write_json


def print_summary(profile: Profile, study_of_profile: Comparison, top: int, console: Console, label: str) -> None:
    """Totals per image, the spiking layers, then the ``top`` layers by energy: the tables of reports.tables;
    ``label``: the model's short name (:func:`profiling.study.short_labels`)."""
    study = study_from_comparison(study_of_profile, {profile.model: profile.model}, headline_convention="strict",
                                  labels={profile.model: label})
    console.out(terminal.totals_text(study, console.width), end="", highlight=False)
    terms = "; ".join(f"{term}: {text}" for term, text in study.presets[0].terms.items())
    text = textwrap.fill(f"terms of {study.headline_preset}: {terms}", width=max(console.width, 40),
                         subsequent_indent="  ", break_on_hyphens=False)
    console.out(text + "\n", end="", highlight=False)
    console.out(terminal.layer_tables(study, label, "strict", top, console.width), end="", highlight=False)
    if profile.unsupported_ops:
        ops = ", ".join(f"{u['op']} x{u['count']}" for u in profile.unsupported_ops)
        console.print(f"[yellow]uncounted ops (no rule): {ops}[/yellow]")


def profile_cmd(
    targets: list[str] = typer.Argument(..., help="Preset names or checkpoints (file, run directory or shipped "
                                        "directory); several are profiled one after another."),
    method: str = method_option(),
    sample_steps: int | None = sample_steps_option(),
    eta: float | None = eta_option(),
    timestep: int | None = timestep_option(),
    seed: int = seed_option(),
    batch_size: int = batch_size_option(),
    json_path: Path | None = typer.Option(None, "--json", help="Write the whole profile as JSON ('-': stdout)."),
    csv_path: Path | None = typer.Option(None, "--csv", help="Write the per-layer table as CSV ('-': stdout)."),
    json_dir: Path | None = typer.Option(None, "--json-dir", help="Write one profile JSON per target into this "
                                         "directory, named by its short label (each as soon as it is counted)."),
    strict: bool = typer.Option(False, "--strict", help="Fail on any op no counting rule covers."),
    costs_spec: str = typer.Option(DEFAULT_COSTS, "--costs", help="Energy constants: a preset or a TOML file."),
    top: int = typer.Option(20, "--top", min=1, help="Layers to show in the summary."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --json / --csv files that exist."),
    device: str | None = device_option("the counted model runs on"),
    quiet: bool = quiet_option(),
    progress: bool | None = progress_option("a sampling run's steps"),
) -> None:
    """Count MACs, ACs and spikes per layer and per image.

    Counts a DDIM 50-step run (eta 1) unless told otherwise; --method forward counts one model call.

    Example: sdit profile sdit-small --sample-steps 20 --json profile.json --csv layers.csv

    Example: sdit profile checkpoints/sdit-small-fmnist checkpoints/dit-small-fmnist --json-dir out/profiles
    """
    with command_output(quiet, progress):
        _profile(targets, batch_size, timestep, sample_steps, method, eta, seed, json_path, csv_path, json_dir,
                 strict, costs_spec, top, overwrite, device, quiet)


def _profile(targets: list[str], batch_size: int, timestep: int | None, sample_steps: int | None, method: str,
             eta: float | None, seed: int, json_path: Path | None, csv_path: Path | None, json_dir: Path | None,
             strict: bool, costs_spec: str, top: int, overwrite: bool, device: str | None, quiet: bool) -> None:
    workload = workload_from_options(method, sample_steps, eta, timestep, batch_size, seed)
    if len(targets) > 1 and (json_path is not None or csv_path is not None):
        fail("--json and --csv take one target; for several, pass --json-dir DIR (one JSON per target)")
    if len(set(targets)) != len(targets):
        fail("each target may be named once")
    if json_path is not None and json_dir is not None:
        fail("give --json (one target) or --json-dir (one file per target), not both")
    check_outputs_or_fail({"--json": json_path, "--csv": csv_path}, overwrite, stdout_ok=("--json", "--csv"))
    to_stdout = is_stdout(json_path) or is_stdout(csv_path)  # the summary and notes go to stderr then
    try:
        costs = load_costs(costs_spec)
    except CostsError as err:
        fail(str(err))
    device = device_from_option(device)
    loaded = [load_target_or_fail(t, "spikes and ACs are near zero") for t in targets]  # all, before any work
    labels = short_labels(loaded)
    files = {t.label: json_dir / f"{_file_name(labels[t.label])}.json" for t in loaded} if json_dir else {}
    check_outputs_or_fail({f"--json-dir {path.name}": path for path in files.values()}, overwrite)
    console = Console(stderr=to_stdout, quiet=quiet and to_stdout)  # --quiet: nothing on stderr
    for one in loaded:
        try:
            profile = profile_workload(one.model.to(device), workload, name=one.label, strict=strict, device=device)
        except (UnsupportedOpError, UnknownNeuronError) as err:
            fail(str(err), DATA_ERROR)
        if len(loaded) > 1:
            console.out(f"\n{labels[one.label]} ({one.label})", highlight=False)
        _report(profile, costs, labels[one.label], top, console, files.get(one.label, json_path), csv_path,
                overwrite, to_stdout)


def _file_name(label: str) -> str:
    """A short label as a file name: characters other than letters, digits, ``@ # . _ -`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9@#._-]", "_", label)


def _report(profile: Profile, costs: Any, label: str, top: int, console: Console, json_path: Path | None,
            csv_path: Path | None, overwrite: bool, to_stdout: bool) -> None:
    """The summary of one profile on the console, its JSON (profile and both conventions' estimates) and CSV."""
    study = compare_profiles([profile], [costs], ("strict", "paper"))
    (target,) = study.targets
    strict, paper = target.estimate(costs.name, "strict"), target.estimate(costs.name, "paper")
    print_summary(profile, study, top, console, label)
    if json_path is not None:
        energy = {"strict": strict.to_dict(), "paper": paper.to_dict()}
        write_json(json_path, {**profile.to_dict(), "energy": energy}, overwrite=overwrite)
        echo(f"wrote {json_path}", err=to_stdout)
    if csv_path is not None:
        frame = profile.layers_frame()  # index layer; units as the Python API's frames (docs/api.md)
        strict_f, paper_f = strict.frame(), paper.frame()
        frame["macs_paper"], frame["acs_paper"] = paper_f["macs"], paper_f["acs"]
        for column, source in (("energy_compute_uj", strict_f["compute_uj"]), ("energy_compute_paper_uj",
                               paper_f["compute_uj"]), ("energy_memory_uj", strict_f["memory_uj"]),
                               ("energy_neuron_uj", strict_f["neuron_uj"])):
            frame[column] = source
        write_bytes(csv_path, frame.to_csv().encode(), overwrite=overwrite)
        echo(f"wrote {csv_path}", err=to_stdout)


# Help panels of the command's options (cli.common.in_panels); the rest are its main "Options".
PANELS = {OUTPUT_PANEL: ("--json", "--csv", "--json-dir", "--top", "--overwrite")}


def register(app: typer.Typer) -> None:
    app.command("profile", cls=SditCommand)(in_panels(profile_cmd, PANELS))
