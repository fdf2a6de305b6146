"""``sdit info PRESET``: parameter counts and config of a preset."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from cli.common import fail
from sdit.authors import is_authors_layout, to_authors_state_dict
from sdit.config import PRESET_NOTES, UnknownPresetError, config_to_dict, get_preset
from sdit.models import build_model, count_params
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
    return facts


def info(
    preset: str = typer.Argument(..., help="Preset name, e.g. sdit-mnist or dit-mnist."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Show a preset's parameter counts and configuration."""
    try:
        facts = preset_info(preset)
    except UnknownPresetError as err:
        fail(str(err))
    if as_json:
        typer.echo(json.dumps(facts))
        return
    table = Table(title=f"{preset} ({facts['kind']})", show_header=False)
    table.add_row("params (all)", f"{facts['params']:,}")
    table.add_row("trainable params", f"{facts['trainable_params']:,}")
    if "wkv_kernel_cpu" in facts:
        table.add_row("WKV kernel (CPU)", str(facts["wkv_kernel_cpu"]))
    for key, value in facts["config"].items():  # type: ignore[union-attr]
        table.add_row(key, str(value))
    console = Console()
    console.print(table)
    console.print(facts["notes"])


def register(app: typer.Typer) -> None:
    app.command("info")(info)
