"""``sdit info PRESET``: parameter counts and config of a preset."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cli.common import OUTPUT_PANEL, SditCommand, check_outputs_or_fail, fail, in_panels, note
from sdit.artifacts import is_stdout, write_json
from sdit.authors import is_authors_layout, to_authors_state_dict
from sdit.config import PRESET_NOTES, UnknownPresetError, config_to_dict, get_preset
from sdit.heap import heap_status
from sdit.models import build_model, count_params
from sdit.models.cpu_kernels import extension_status as cpu_kernels_status
from sdit.models.wkv import wkv_backend


def preset_info(name: str) -> dict[str, object]:
    """The facts ``sdit info`` prints, as a JSON-ready dict."""
    config = get_preset(name)
    model = build_model(config)
    counts = count_params(model)
    facts: dict[str, object] = {
        "preset": name,
        "kind": config.kind,
        "params": counts.params,
        "trainable_params": counts.trainable_params,
        "config": config_to_dict(config),
        "notes": PRESET_NOTES[name],
    }
    if is_authors_layout(config):  # the state dict under the authors' key names, in their order
        facts["authors_state_dict"] = [
            {"key": k, "shape": list(v.shape)} for k, v in to_authors_state_dict(model).items()
        ]
    if config.kind == "sdit":
        facts["wkv_kernel_cpu"] = wkv_backend("cpu")  # builds the C++ kernel on first use
        facts["cpu_kernels"] = cpu_kernels_status()  # LIF and token-shift C kernels, or why the fallback runs
    facts["heap"] = heap_status()  # whether freed CPU memory stays in the process (sdit.heap)
    return facts


def info(
    preset: str = typer.Argument(..., help="Preset name, e.g. sdit-mnist or dit-mnist."),
    json_path: Path | None = typer.Option(
        None, "--json", help="Write the facts as one JSON object to this file ('-': stdout, instead of the "
        "table; a bare --json, the old form, means '-')."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --json if it exists."),
) -> None:
    """Show a preset's parameter counts and configuration.

    Example: sdit info sdit-mnist --json -
    """
    check_outputs_or_fail({"--json": json_path}, overwrite, stdout_ok=("--json",))
    try:
        facts = preset_info(preset)
    except UnknownPresetError as err:
        fail(str(err))
    if json_path is not None and is_stdout(json_path):
        typer.echo(json.dumps(facts))
        return
    table = Table(title=f"{preset} ({facts['kind']})", show_header=False)
    table.add_row("params (all)", f"{facts['params']:,}")
    table.add_row("trainable params", f"{facts['trainable_params']:,}")
    if "wkv_kernel_cpu" in facts:
        table.add_row("WKV kernel (CPU)", str(facts["wkv_kernel_cpu"]))
        table.add_row("C kernels (CPU)", str(facts["cpu_kernels"]))
    table.add_row("heap (CPU)", str(facts["heap"]))
    for key, value in facts["config"].items():  # type: ignore[union-attr]
        table.add_row(key, str(value))
    console = Console()
    console.print(table)
    console.print(facts["notes"])
    if json_path is not None:
        write_json(json_path, facts, overwrite=overwrite)
        note(f"wrote {json_path}")


# Help panels of the command's options (cli.common.in_panels); the rest are its main "Options".
PANELS = {OUTPUT_PANEL: ("--json", "--overwrite")}


def register(app: typer.Typer) -> None:
    app.command("info", cls=SditCommand)(in_panels(info, PANELS))
