"""``sdit profile TARGET``: per-layer MACs, ACs and spikes of one forward or a sampling run."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

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
from profiling.counter import UnknownNeuronError, UnsupportedOpError
from profiling.energy import DEFAULT_COSTS, CostsError, EnergyEstimate, estimate_energy, load_costs
from profiling.records import Profile, Workload, WorkloadError
from profiling.workloads import profile_workload
from sdit.artifacts import is_stdout, write_bytes, write_json


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.4g}"


def print_summary(profile: Profile, estimate: EnergyEstimate, top: int, console: Console) -> None:
    """Totals per image, then the ``top`` layers by dense MACs, each figure with its unit."""
    what = profile.workload.label()
    totals = Table(title=f"{profile.model}: {what}, per image (batch {profile.batch_size}, T={profile.time_steps})")
    totals.add_column("quantity")
    totals.add_column("per image", justify="right")
    totals.add_column("unit / convention")
    per = profile.per_image
    rows = [
        ("MACs (strict)", per["macs"], "multiply-accumulates with real-valued inputs"),
        ("ACs (strict)", per["acs"], "accumulates driven by spikes, nnz x fan-out"),
        ("MACs (paper conv.)", per["macs_paper"], "synaptic ops outside spiking blocks"),
        ("ACs (paper conv.)", per["acs_paper"], "fr x dense MACs inside spiking blocks"),
        ("dense MACs", per["dense_macs"], "all synaptic ops counted dense (fvcore/thop view)"),
        ("spikes", per["spikes"], "neuron outputs equal to 1, all T steps"),
        ("neuron updates", per["neuron_updates"], "membrane updates, neurons x T"),
        ("norm elements", per["norm"], "LayerNorm inputs"),
        ("softmax elements", per["softmax"], "elements"),
        ("exp ops", per["exp"], "exp, sigmoid, SiLU, GELU, WKV exponentials"),
        ("adds / muls / other", per["adds"] + per["muls"] + per["other"], "elementwise ops"),
    ]
    for label, value, unit in rows:
        totals.add_row(label, _fmt(value), unit)
    if per["neuron_updates"]:
        totals.add_row("mean firing rate", f"{per['spikes'] / per['neuron_updates']:.4%}", "spikes / (neurons x T)")
    energy = estimate.per_image
    costs = estimate.costs
    unit = f"uJ; {costs.name}: MAC {costs.e_mac_pj} pJ, AC {costs.e_ac_pj} pJ"
    totals.add_row("energy, strict", f"{energy['compute_j'] * 1e6:,.3f}", unit)
    totals.add_row("energy, paper conv.", f"{energy['compute_paper_j'] * 1e6:,.3f}", unit)
    console.print(totals)

    layers = Table(title=f"top {top} layers by dense MACs (per image; energy strict, {costs.name})")
    layers.add_column("layer", overflow="fold")
    for col in ("kind", "MACs", "ACs", "ACs paper", "spikes", "firing rate", "energy uJ"):
        layers.add_column(col, justify="left" if col == "kind" else "right")
    ranked = sorted(profile.layers, key=lambda r: (r.dense_macs, r.neuron_updates), reverse=True)[:top]
    for r in ranked:
        rate = "" if r.firing_rate is None else f"{r.firing_rate:.3%}"
        joules = estimate.layers[r.name]["compute_j"] or 0.0
        layers.add_row(r.name, r.kind, _fmt(r.macs), _fmt(r.acs), _fmt(r.acs_paper), _fmt(r.spikes), rate,
                       f"{joules * 1e6:.3f}")
    console.print(layers)
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
    estimate = estimate_energy(profile, costs)
    print_summary(profile, estimate, top, console)
    if json_path is not None:
        write_json(json_path, {**profile.to_dict(), "energy": estimate.to_dict()}, overwrite=overwrite)
        echo(f"wrote {json_path}", err=to_stdout)
    if csv_path is not None:
        frame = profile.to_dataframe()
        for column in ("compute_j", "compute_paper_j", "memory_j", "neuron_j"):
            frame[f"energy_{column}"] = [estimate.layers[name][column] for name in frame.index]
        write_bytes(csv_path, frame.to_csv().encode(), overwrite=overwrite)
        echo(f"wrote {csv_path}", err=to_stdout)


def register(app: typer.Typer) -> None:
    app.command("profile", cls=SditCommand)(profile_cmd)
