"""The terminal tables of profile, energy and compare: reports.tables' rows, every number whole at 80 columns."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from reports.terminal import ELLIPSIS, middle_ellipsis

runner = CliRunner()


def _table_rows(text: str, header_start: str) -> list[list[str]]:
    """The cells of the table whose header line starts with ``header_start`` (split on runs of spaces)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:  # header, rule
        if not line.strip() or line.startswith(("wrote ", "  ")):  # the end, or the notes under a table
            break
        rows.append(line.split())
    return rows


def _int(cell: str) -> int:
    return int(cell.replace(",", ""))


def _same_name(shown: str, full: str) -> bool:
    if ELLIPSIS not in shown:
        return shown == full
    head, tail = shown.split(ELLIPSIS)
    return full.startswith(head) and full.endswith(tail) and len(full) > len(shown)


@pytest.mark.parametrize("columns", [80, 60])
def test_profile_layer_tables_print_every_number_whole(tmp_path: Path, columns: int) -> None:
    table = tmp_path / "layers.csv"
    result = runner.invoke(app, ["profile", "sdit-tiny", "--sample-steps", "2", "--top", "12", "--csv", str(table)],
                           env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    out = result.stdout
    file_rows = list(csv.DictReader(table.open()))
    # every table line fits (titles and the unit column wrap at spaces; the terms line is one soft-wrapped line)
    for line in out.splitlines():
        assert len(line) <= columns or line.startswith(("terms of ", "wrote ")), line

    lif = _table_rows(out, "LIF layer")
    want = [r for r in file_rows if int(r["neurons"]) > 0]  # every spiking layer, in execution order
    assert len(lif) == len(want) == 6
    for (name, neurons, spikes, rate), r in zip(lif, want, strict=True):
        assert _same_name(name, r["layer"])
        assert (_int(neurons), _int(spikes)) == (int(r["neurons"]), int(r["spikes"]))
        assert rate == f"{100 * float(r['firing_rate']):.3f}"

    other = _table_rows(out, "layer ")
    ranked = sorted((r for r in file_rows if int(r["neurons"]) == 0),
                    key=lambda r: -float(r["energy_compute_uj"]))[:12]  # stable: execution order among ties
    assert len(other) == 12
    for (name, macs, acs, acs_paper, uj), r in zip(other, ranked, strict=True):
        assert _same_name(name, r["layer"]), (name, r["layer"])
        assert (_int(macs), _int(acs), _int(acs_paper)) == (int(r["macs"]), int(r["acs"]), int(float(r["acs_paper"])))
        assert uj == f"{float(r['energy_compute_uj']):,.3f}"
    shortened = [row[0] for row in other if ELLIPSIS in row[0]]
    if columns == 60:  # too narrow for 'in_blocks.0.channel_mixing.value' beside four whole numbers
        assert shortened and all(len(n) == len(shortened[0]) >= 12 for n in shortened)
        width = len(shortened[0])  # start and end kept, one ellipsis in the middle
        assert [row[0] for row in other] == [middle_ellipsis(r["layer"], width) for r in ranked]
        assert middle_ellipsis("in_blocks.0.channel_mixing.value", 15) == "in_bloc" + ELLIPSIS + "g.value"
    else:
        assert shortened == []

    totals = {" ".join(row[:2]): row[2] for row in _table_rows(out, "quantity") if len(row) > 2}
    assert _int(totals["MACs (strict)"]) == sum(int(r["macs"]) for r in file_rows)


def test_energy_and_compare_tables_come_from_reports_tables(tmp_path: Path) -> None:
    out = tmp_path / "e.json"
    result = runner.invoke(app, ["energy", "sdit-tiny", "--baseline", "dit-tiny", "--method", "forward",
                                 "--json", str(out)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    rows = {r[0]: r[1:] for r in _table_rows(result.stdout, "convention   MAC uJ")}
    for conv, per in data["by_convention"].items():
        assert rows[conv][0] == f"{per['mac_j'] * 1e6:,.3f}" and rows[conv][-1] == f"{per['total_j'] * 1e6:,.3f}"
    assert rows["strict"][2:4] == ["n/d", "off"]  # neuron: not defined by 45nm-fp32; memory not asked for
    assert "  neuron: not defined by 45nm-fp32" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines() if not line.startswith(
        ("terms of", "constants:", "break-even", "measured", "wrote "))) <= 80  # a path is not wrapped
