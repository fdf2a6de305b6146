"""``sdit table3``: the paper's Table III beside dit-mnist, sdit-mnist and sdit-mnist-authors, every convention."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cli.common import DATA_ERROR, OUTPUT_PANEL, SditCommand, check_outputs_or_fail, fail, in_panels, note
from profiling.table3 import DEFAULT_MODELS, table3
from reports.table3 import render_markdown, render_text
from sdit.artifacts import is_stdout, write_bytes, write_json
from sdit.targets import TargetError, load_target

FORMATS = ("text", "markdown", "json")


def table3_cmd(
    output_format: str = typer.Option("text", "--format", help="What to print: text (80 columns), markdown or json."),
    markdown_path: Path | None = typer.Option(None, "--markdown", help="Also write the Markdown table to this file."),
    json_path: Path | None = typer.Option(
        None, "--json", help="Also write the whole table as JSON to this file ('-': stdout, the --format output then "
        "on stderr)."),
    dit: str = typer.Option(DEFAULT_MODELS["dit"], "--dit", help="Model compared with the paper's DiT row."),
    sdit: str = typer.Option(DEFAULT_MODELS["sdit"], "--sdit", help="Our reading of the paper's SDiT."),
    sdit_authors: str = typer.Option(
        DEFAULT_MODELS["sdit_authors"], "--sdit-authors", help="SDiT as the authors' code builds it."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --markdown / --json files that exist."),
) -> None:
    """Parameters and MACs per image under each counting convention, and which one reproduces Table III.

    Example: sdit table3 --format markdown --markdown table3.md --json table3.json
    """
    if output_format not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, got {output_format!r}")
    check_outputs_or_fail({"--markdown": markdown_path, "--json": json_path}, overwrite, stdout_ok=("--json",))
    to_stdout = is_stdout(json_path)  # the JSON alone on stdout, the --format output on stderr
    names = {"dit": dit, "sdit": sdit, "sdit_authors": sdit_authors}

    def load(name: str):
        try:
            return load_target(name).model
        except TargetError as err:
            fail(str(err))
        except ValueError as err:  # a checkpoint that is missing or does not load
            fail(str(err), DATA_ERROR)

    table = table3(names, load=load)
    data = table.to_dict()
    printed = {"text": render_text, "markdown": render_markdown}.get(output_format)
    if not (to_stdout and printed is None):  # --format json with --json -: the JSON once
        typer.echo(printed(table) if printed else json.dumps(data, indent=1), nl=printed is None, err=to_stdout)
    if markdown_path is not None:
        write_bytes(markdown_path, render_markdown(table).encode(), overwrite=overwrite)
        note(f"wrote {markdown_path}")
    if json_path is not None:
        write_json(json_path, data, overwrite=overwrite)
        if not to_stdout:
            note(f"wrote {json_path}")


# Help panels of the command's options (cli.common.in_panels); the rest are its main "Options".
PANELS = {OUTPUT_PANEL: ("--format", "--markdown", "--json", "--overwrite")}


def register(app: typer.Typer) -> None:
    app.command("table3", cls=SditCommand)(in_panels(table3_cmd, PANELS))
