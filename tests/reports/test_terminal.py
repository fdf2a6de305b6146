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


def _profile(spikes: int, acs: int):
    from profiling.records import LayerRecord, Profile
    from sdit.workload import Workload

    layers = [LayerRecord(name="lif", kind="LIF", spikes=spikes, neuron_updates=40, neurons=10)]
    return Profile(model="m", kind="sdit", workload=Workload.forward(500), batch_size=1, time_steps=4,
                   per_image={"spikes": spikes, "neuron_updates": 40, "acs": acs, "macs": 100}, layers=layers,
                   steps=[], conventions={}, unsupported_ops=[])


def test_strict_acs_hint_only_where_a_firing_model_has_no_strict_acs() -> None:
    from reports.terminal import strict_acs_hint

    hint = strict_acs_hint(_profile(spikes=12, acs=0))
    assert hint is not None and hint.startswith("ACs (strict) 0 by design") and "docs/conventions.md" in hint
    assert strict_acs_hint(_profile(spikes=12, acs=30)) is None  # spike-driven: its ACs are counted
    assert strict_acs_hint(_profile(spikes=0, acs=0)) is None  # silent (untrained): not by design alone


def test_fill_wraps_at_spaces_and_keeps_long_words_whole() -> None:
    from reports.terminal import fill

    text = fill("break-even " * 10 + "/a/very/long/path/" * 5, 40)
    lines = text.splitlines()
    assert all(line.strip() in ("/a/very/long/path/" * 5,) or len(line) <= 40 for line in lines)
    assert "/a/very/long/path/" * 5 in text and all(line.startswith("  ") for line in lines[1:])


def test_whole_and_tenths_round_only_the_fraction() -> None:
    assert format_cell(6_984_918.463, "whole") == "6,984,918"
    assert format_cell(187.04988, "tenths") == "187.0"
    assert format_cell(1234.56, "tenths") == "1,234.6"


def test_a_break_even_no_rate_reaches_reads_never_with_its_meaning_once() -> None:
    from profiling.compare import Verdict
    from profiling.energy import DEARER_WHEN_SILENT
    from reports.terminal import verdict_text

    def row(memory: str, rate: float | None, why: str) -> Verdict:
        return Verdict(model="sdit-small-sd-rate0.3-fmnist@1250", baseline="dit-small-int8@24000",
                       costs="45nm-fp32", convention="paper", memory=memory, model_j=3.5e-3, baseline_j=9.3e-4,
                       memory_j=None, ratio=3.774, break_even=rate, break_even_text=why, unassigned=0)

    text = verdict_text([row("none", 0.0377, "3.77%"), row("operand-once:45nm-sram-8kb", None, DEARER_WHEN_SILENT),
                         row("lemaire:45nm-sram-lemaire", None, DEARER_WHEN_SILENT)], "DDIM 50 steps", 80)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert [line.split()[-1] for line in lines if line.startswith("paper")] == ["3.77%", "never", "never"]
    assert text.count("never: the model costs more than the baseline even when silent") == 1
    assert "dearer" not in text.replace("never: the model costs more", "")
