"""Plain-text tables (reports.terminal): whole numbers, middle-ellipsised names, wider rather than cut."""

from __future__ import annotations

import pandas as pd

from reports.terminal import ELLIPSIS, Col, format_cell, middle_ellipsis, render


def test_middle_ellipsis_keeps_both_ends() -> None:
    assert middle_ellipsis("out_blocks.0.channel_mixing.receptance", 16) == "out_bloc" + ELLIPSIS + "eptance"
    assert middle_ellipsis("short", 16) == "short"
    assert len(middle_ellipsis("x" * 50, 13)) == 13


def test_format_cell_prints_numbers_whole() -> None:
    assert format_cell(26_214_400_000, "count") == "26,214,400,000"
    assert format_cell(3.0, "count") == "3"  # a count held as float (a column with gaps)
    assert format_cell(1234.5678, "uj") == "1,234.568"
    assert format_cell(None, "uj", "n/d") == "n/d"
    assert format_cell(float("nan"), "pct") == "-"


def test_only_names_give_way_and_a_table_too_wide_is_printed_wider() -> None:
    frame = pd.DataFrame({"layer": ["in_blocks.0.time_mixing.receptance", "final_layer.linear"],
                          "macs": [26_214_400_000, 7], "note": ["a few words that may wrap", "x"]})
    cols = [Col("layer", "layer", "name"), Col("macs", "MACs", "count"), Col("note", "note", "text")]
    text = render(frame, cols, title="a title", width=37)
    assert text.splitlines()[0] == "a title"
    assert "26,214,400,000" in text and max(len(line) for line in text.splitlines()) <= 37
    assert "in_blo" + ELLIPSIS + "tance   26,214,400,000" in text  # the name shortened to 12: start and end kept
    narrow = render(frame, cols, width=20)  # cannot fit: wider than asked, still whole
    assert "26,214,400,000" in narrow and max(len(line) for line in narrow.splitlines()) > 20
