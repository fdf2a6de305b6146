"""Terminal tables from the DataFrames of :mod:`reports.tables`: the rows and labels the page shows.

A number is never cut: its column is as wide as its widest cell, and where a table is wider than
the terminal, only the name column gives way, its names shortened with an ellipsis in the middle
(``in_blocks.0.time_mixing.key`` -> ``in_blocks…mixing.key``; the files keep full names). A table
that cannot fit even then is printed wider than the terminal rather than cut.

Every function returns plain text (no colour, no markup), so what a test reads is what a user sees.
"""

from __future__ import annotations

import io
import math
import os
import textwrap
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table

from profiling.compare import Comparison, Verdict
from profiling.energy import DEARER_WHEN_SILENT, NO_RATE_DEPENDENCE
from profiling.records import Profile
from reports import tables
from reports.study import Study

__all__ = ["Col", "energy_terms_text", "energy_text", "fill", "format_cell", "frontier_text", "layer_tables",
           "middle_ellipsis",
           "render", "sensitivity_text", "strict_acs_hint", "terminal_width", "totals_text", "untrained_of",
           "verdict_text"]

ELLIPSIS = "\u2026"
# Beside every firing-rate-dependent figure of a preset (untrained weights): the figure is no result.
UNTRAINED = "untrained weights"
MIN_NAME_WIDTH = 12
# A missing break-even in the verdict matrix's narrow column (its meaning printed once under the table)
VERDICT_WORDS = {NO_RATE_DEPENDENCE: tables.BREAK_EVEN_WORDS[NO_RATE_DEPENDENCE], DEARER_WHEN_SILENT: "never"}
Kind = Literal["text", "name", "count", "pct", "uj", "whole", "tenths", "ratio", "float"]


@dataclass(frozen=True)
class Col:
    """A column of a terminal table.

    Attributes:
        key: The DataFrame column.
        header: The header printed (short: the unit lives in the title or the header).
        kind: ``name`` (the one column that may be shortened), ``text`` (may wrap at spaces), or a
            number format: ``count`` (integer with separators), ``pct`` (3 decimals), ``uj``
            (3 decimals with separators), ``whole`` (rounded to the unit, with separators), ``tenths``
            (1 decimal), ``ratio`` (3 decimals), ``float`` (6 significant digits).
        missing: What a missing value (``None``/NaN) prints as.
    """

    key: str
    header: str
    kind: Kind = "text"
    missing: str = "-"


def terminal_width(default: int = 80) -> int:
    """The terminal's width: ``COLUMNS`` where set, else the terminal's, else ``default``."""
    try:
        return max(20, int(os.environ["COLUMNS"]))
    except (KeyError, ValueError):
        return Console().width or default


def format_cell(value: Any, kind: Kind, missing: str = "-") -> str:
    """A cell as printed: numbers in full (never rounded to fewer integer digits, never abbreviated)."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy scalar -> Python
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    if kind in ("text", "name") or isinstance(value, str):
        return str(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if kind == "count":
        return f"{round(value):,}" if float(value).is_integer() else f"{value:,.3f}"
    if kind in ("pct", "ratio"):
        return f"{value:.3f}"
    if kind == "uj":
        return f"{value:,.3f}"
    if kind == "whole":
        return f"{value:,.0f}"
    if kind == "tenths":
        return f"{value:,.1f}"
    return f"{value:.6g}"


def middle_ellipsis(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters: its start and end kept, an ellipsis in the middle."""
    if len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    tail = (width - 1) // 2
    head = width - 1 - tail
    return text[:head] + ELLIPSIS + (text[-tail:] if tail else "")


def _table(cols: Sequence[Col], rows: list[list[str]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=False)
    for col, cells in zip(cols, zip(*rows, strict=True) if rows else [()] * len(cols), strict=True):
        if col.kind == "text":  # wraps at spaces, never inside a word
            word = max((len(w) for c in (col.header, *cells) for w in c.split()), default=1)
            table.add_column(col.header, justify="left", overflow="fold", min_width=word)
        else:  # numbers and names: as wide as the widest cell, never folded or cut
            widest = max([len(col.header), *(len(c) for c in cells)])
            table.add_column(col.header, justify="left" if col.kind == "name" else "right", no_wrap=True,
                             min_width=widest)
    for row in rows:
        table.add_row(*row)
    return table


def _text(table: Table, width: int) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, force_terminal=False, legacy_windows=False,
            soft_wrap=False).print(table, crop=False)
    return buffer.getvalue()


def _least_width(cols: Sequence[Col], rows: list[list[str]]) -> int:
    """The narrowest the table can be with every number whole: text cells folded to their longest word."""
    def least(cell: str) -> str:
        return max(cell.split(), key=len, default="")

    narrow = [[least(cell) if c.kind == "text" else cell for c, cell in zip(cols, r, strict=True)] for r in rows]
    headers = [Col(c.key, least(c.header) if c.kind == "text" else c.header, c.kind) for c in cols]
    return max((len(line.rstrip()) for line in _text(_table(headers, narrow), 10_000).splitlines()), default=0)


def render(frame: pd.DataFrame, cols: Sequence[Col], title: str | None = None, width: int | None = None) -> str:
    """``frame``'s ``cols`` as a plain-text table of at most ``width`` columns where it can fit.

    Numbers are printed in full (see :func:`format_cell`) in columns as wide as their widest cell; text
    cells wrap at spaces; only a ``name`` column is shortened, by a middle ellipsis and to no fewer than
    12 characters; a table that still does not fit is printed as wide as it needs. The title is a line
    of its own above the table.
    """
    width = width or terminal_width()
    rows = [[format_cell(v, c.kind, c.missing) for c, v in zip(cols, values, strict=True)]
            for values in frame[[c.key for c in cols]].itertuples(index=False, name=None)]
    needed = _least_width(cols, rows)
    names = [i for i, c in enumerate(cols) if c.kind == "name"]
    if needed > width and names:
        i = names[0]
        longest = max((len(r[i]) for r in rows), default=0)
        room = max(MIN_NAME_WIDTH, len(cols[i].header), longest - (needed - width))
        rows = [[middle_ellipsis(cell, room) if j == i else cell for j, cell in enumerate(r)] for r in rows]
        needed = _least_width(cols, rows)
    body = _text(_table(cols, rows), max(width, needed))
    lines = [line.rstrip() for line in body.splitlines()]
    head = textwrap.fill(title, max(width, needed), break_long_words=False, break_on_hyphens=False) if title else ""
    return (f"{head}\n" if head else "") + "\n".join(lines) + "\n"


def fill(text: str, width: int | None = None, indent: str = "  ") -> str:
    """``text`` wrapped at spaces to ``width`` (default the terminal's), its later lines indented, with a
    final newline; a word is never broken (a path longer than the line keeps a line of its own)."""
    return textwrap.fill(text, max(width or terminal_width(), 40), subsequent_indent=indent, break_long_words=False,
                         break_on_hyphens=False) + "\n"


def untrained_of(comparison: Comparison) -> set[str]:
    """The spiking targets of ``comparison`` with a preset's untrained weights (their firing-rate-dependent
    figures say nothing of a trained model)."""
    return {t.name for t in comparison.targets if t.source == "preset" and t.spiking}


def _shown(label: str, untrained: bool) -> str:
    """A model's name as a title or a line shows it: with ``(untrained weights)`` where that holds."""
    return f"{label} ({UNTRAINED})" if untrained else label


def _untrained(study: Study, label: str) -> bool:
    m = study.model(label)
    return m.untrained and m.profile.is_spiking


def strict_acs_hint(profile: Profile) -> str | None:
    """Why a firing model's strict AC count is 0, where it is: no synaptic layer of the model reads spikes
    (SDiT averages each LIF's T steps back to a rate before any Linear), so the strict convention, which
    charges an AC only for a spike input, finds none; ``None`` where that does not hold."""
    per_image = profile.per_image
    if not profile.is_spiking or per_image.get("acs", 0) or not per_image.get("spikes", 0):
        return None
    return ("ACs (strict) 0 by design: no synaptic layer of this model reads spikes (each LIF's T steps are "
            "averaged to a rate first), and the strict convention charges an AC only for a spike input; the "
            "paper, block and spikformer conventions charge rate-weighted ACs (docs/conventions.md)")


def totals_text(study: Study, width: int | None = None) -> str:
    """The totals of every model (:func:`reports.tables.totals_table`): counts as integers, the firing rate
    and the energies with 3 decimals; a preset's untrained weights said in the title, and why strict ACs
    are 0 under the table where that is by design (:func:`strict_acs_hint`)."""
    frame = tables.totals_table(study)
    labels = [m.label for m in study.models]
    counts = ~frame["quantity"].str.startswith(("energy", "mean firing"))
    shown = frame.copy()
    for label in labels:
        shown[label] = [format_cell(v, "count" if c else "uj", "undefined")
                        for v, c in zip(frame[label], counts, strict=True)]
    cols = [Col("quantity", "quantity", "text"),
            *(Col(label, label if len(labels) > 1 else "per image", "uj") for label in labels),
            Col("unit", "unit / convention", "text")]
    names = ", ".join(_shown(label, _untrained(study, label)) for label in labels)
    text = render(shown, cols, title=f"{names}: {study.workload_label}, per image", width=width)
    hints = [(m.label, strict_acs_hint(m.profile)) for m in study.models]
    return text + "".join(fill(f"  {label}: {hint}" if len(labels) > 1 else f"  {hint}", width, "    ")
                          for label, hint in hints if hint)


def layer_tables(study: Study, model: str, convention: str, top: int, width: int | None = None) -> str:
    """The spiking layers of ``model`` (execution order, every one) and its ``top`` layers by estimated
    energy under ``convention`` (headline preset), from :func:`reports.tables.layers_table`."""
    layers = tables.layers_table(study)
    layers = layers[layers.model == model]
    energy = f"energy_uJ_{convention}_{study.headline_preset}"
    out = []
    spiking = layers[layers["neurons"] > 0]
    if len(spiking):
        out.append(render(spiking, [Col("layer", "LIF layer", "name"), Col("neurons", "neurons", "count"),
                                    Col("spikes", "spikes", "count"), Col("firing_rate_pct", "firing %", "pct")],
                          title=f"{len(spiking)} spiking layers (LIF), execution order: spikes per image over "
                                "all T steps; firing % = 100 x spikes / (neurons x T)", width=width))
    ranked = layers[layers["neurons"] == 0].sort_values([energy, "order"], ascending=[False, True],
                                                        kind="stable", na_position="last").head(top)
    out.append(render(ranked, [Col("layer", "layer", "name"), Col("macs_strict", "MACs", "count"),
                               Col("acs_strict", "ACs", "count"), Col("acs_paper", "ACs paper", "count"),
                               Col(energy, "uJ", "uj", "n/d")],
                      title=f"top {len(ranked)} of {len(layers) - len(spiking)} other layers by estimated energy "
                            f"(uJ per image, {convention} convention, {study.headline_preset}); MACs and ACs "
                            "strict, per image", width=width))
    return "\n".join(out)


def energy_terms_text(study: Study, model: str, preset: str, width: int | None = None) -> str:
    """Energy per image of ``model`` by term under each convention (:func:`reports.tables.energy_terms_table`)."""
    frame = tables.energy_terms_table(study)
    sel = frame[(frame.model == model) & (frame.preset == preset)]
    text = render(sel, [Col("convention", "convention", "text"), Col("mac_uJ_per_image", "MAC uJ", "uj", "n/d"),
                        Col("ac_uJ_per_image", "AC uJ", "uj", "n/d"),
                        Col("neuron_uJ_per_image", "neuron uJ", "uj", "n/d"),
                        Col("memory_uJ_per_image", "memory uJ", "uj", "off"),
                        Col("total_uJ_per_image", "total uJ", "uj", "undefined")],
                  title=f"{_shown(model, _untrained(study, model))}: estimated energy per image, "
                        f"{study.workload_label} ({preset})", width=width)
    notes = list(dict.fromkeys(n for note in sel["note"] if note for n in note.split("; ")))
    hint = strict_acs_hint(study.model(model).profile) if "strict" in study.conventions else None
    return text + "".join(fill(f"  {note}", width, "    ") for note in [*notes, *([hint] if hint else [])])


def sensitivity_text(study: Study, width: int | None = None) -> str:
    """The verdict per convention for each model pair (:func:`reports.tables.sensitivity_table`)."""
    sens = tables.sensitivity_table(study)
    # who costs less, as the header names them (two long checkpoint paths would not fit 80 columns)
    sens["cheaper"] = [("model" if c == m else "baseline" if c == b else c)
                       for c, m, b in zip(sens["cheaper"], sens["model"], sens["baseline"], strict=True)]
    out = []
    for (model, baseline), rows in sens.groupby(["model", "baseline"], sort=False):
        out.append(render(rows, [Col("convention", "convention", "text"),
                                 Col("model_uJ_per_image", "model uJ", "uj", "undefined"),
                                 Col("baseline_uJ_per_image", "baseline uJ", "uj", "undefined"),
                                 Col("ratio_model_to_baseline", "ratio", "ratio", "n/a"),
                                 Col("break_even_firing_rate_pct", "break-even %", "pct", "n/a"),
                                 Col("cheaper", "cheaper", "text")],
                          title=f"{model} (model{', ' + UNTRAINED if _untrained(study, model) else ''}) vs "
                                f"{baseline} (baseline): estimated energy per image, "
                                f"{study.workload_label}, {study.headline_preset}", width=width))
    return "\n".join(out)


def _uj_or(value: float | None, undefined: str) -> str:
    return undefined if value is None else f"{value * 1e6:,.3f}"


def _rate(profile: Profile) -> str:
    rate = profile.mean_firing_rate
    return "no spiking neurons (ANN)" if rate is None else f"mean firing rate {rate:.3%}"


def energy_text(comparison: Comparison, labels: dict[str, str] | None = None, width: int | None = None) -> str:
    """What ``sdit energy`` prints under its tables, wrapped at spaces to ``width``: each model's mean firing
    rate and its energy as a multiple of the baseline's per convention (the verdict), the first preset's
    terms and source, the first target's break-even rates, and what was measured (or why nothing was).

    ``labels``: target name -> short label (:func:`profiling.study.short_labels`). A spiking preset's
    firing-rate-dependent lines (the verdict, each break-even) say ``untrained weights`` on that line."""
    labels = labels or {}
    name = {t.name: labels.get(t.name, t.name) for t in comparison.targets}
    untrained = untrained_of(comparison)
    costs = comparison.costs[0]
    what = comparison.workload.label()
    main = comparison.targets[0]
    base = comparison.targets[1] if len(comparison.targets) > 1 else None
    lines = []
    for t in comparison.targets:
        line = f"{_shown(name[t.name], t.name in untrained)}: {_rate(t.profile)}"
        if base is not None and t is main:
            ratios = []
            for conv in comparison.conventions:
                model_j, base_j = t.estimate(costs.name, conv).total_j, base.estimate(costs.name, conv).total_j
                ratios.append(f"{conv} {model_j / base_j:.3f}x" if model_j is not None and base_j else
                              f"{conv} undefined")
            line += f"; estimated energy / {name[base.name]}'s: {', '.join(ratios)} ({costs.name}, {what})"
        lines.append(line)
    terms = "; ".join(f"{term}: {text}" for term, text in costs.terms().items())
    lines += [f"terms of {costs.name}: {terms}",
              f"constants: {costs.source} [{costs.evidence}, {costs.scope}, {costs.process or 'node not stated'}]"]
    rows = [b for b in comparison.break_even if b.model == main.name and b.costs == costs.name]
    if rows:
        bases = {_uj_or(b.baseline_j, "undefined") for b in rows}
        at = f" at {bases.pop()} uJ/image" if len(bases) == 1 else ""
        lines.append(f"break-even firing rate of {name[main.name]}: the mean rate at which it would cost what "
                     f"{name[rows[0].baseline]}{at} costs ({costs.name}, {what})")
        fires = main.profile.mean_firing_rate or 0.0
        own = (f"{name[main.name]}: {UNTRAINED}, fires at {fires:.3%}" if main.name in untrained
               else f"{name[main.name]} fires at {fires:.3%}")
        for b in rows:
            base_uj = "" if at else f", vs {_uj_or(b.baseline_j, 'undefined')} uJ/image"
            if b.firing_rate is None:
                lines.append(f"  {b.convention}: none ({own}{base_uj}): {b.reason}")
            else:
                lines.append(f"  {b.convention}: {b.firing_rate:.2%} ({own}{base_uj})")
    missing = [t for t in comparison.targets if t.measured is None]
    if missing and len(missing) == len(comparison.targets) and len({t.measured_reason for t in missing}) == 1:
        lines.append(f"measured energy unavailable: {main.measured_reason}")
    else:  # the target and its baseline are measured alike; say which one failed
        lines += [f"measured energy of {name[t.name]} unavailable: {t.measured_reason}" for t in missing]
    for t in (t for t in comparison.targets if t.measured is not None):
        m = t.measured
        lines.append(f"measured {name[t.name]}: {m['energy_j_per_image']:.6g} J/image ({what}; above idle "
                     f"{m['energy_above_idle_j_per_image']:.6g} J/image; {m['method']}, window {m['window_s']:.2f} s, "
                     f"{m['repeats']} repeats, idle {m['idle_power_w']:.1f} W, {m['device']}; "
                     f"{m.get('meter', 'NVML')})")
    return "".join(fill(line, width, "    " if line.startswith("  ") else "  ") for line in lines)


def verdict_text(rows: Sequence[Verdict], workload: str, width: int | None = None, *,
                 labels: dict[str, str] | None = None, untrained: Collection[str] = ()) -> str:
    """The verdict matrix (:func:`profiling.compare.verdict_matrix`), one table per model pair: per counting
    convention and memory model the totals, their ratio and the break-even firing rate (in words where there
    is none in 0..100 %).

    ``labels``: target name -> short label; ``untrained``: models with a preset's untrained weights, said in
    the table's title (:func:`untrained_of`)."""
    labels = labels or {}
    out = []
    pairs = list(dict.fromkeys((r.model, r.baseline) for r in rows))
    for model, baseline in pairs:
        sel = [r for r in rows if (r.model, r.baseline) == (model, baseline)]
        frame = pd.DataFrame([{
            "convention": r.convention, "memory": r.memory.split(":")[0],
            "model_uJ": None if r.model_j is None else r.model_j * 1e6,
            "baseline_uJ": None if r.baseline_j is None else r.baseline_j * 1e6, "ratio": r.ratio,
            "break_even": VERDICT_WORDS.get(r.break_even_text, r.break_even_text)} for r in sel])
        presets = ", ".join(dict.fromkeys(f"{r.memory.split(':')[0]} at {r.memory.split(':')[1]}"
                                          for r in sel if ":" in r.memory))
        unassigned = ", ".join(dict.fromkeys(f"{r.memory.split(':')[0]} {r.unassigned}" for r in sel if r.unassigned))
        costs = sel[0].costs.split(" + ")[0] if sel else ""
        who = f"model, {UNTRAINED}" if model in untrained else "model"
        names = labels.get(model, model), labels.get(baseline, baseline)
        notes = [f"memory presets: {presets}" if presets else "",
                 "never: the model costs more than the baseline even when silent"
                 if any(r.break_even_text == DEARER_WHEN_SILENT for r in sel) else "",
                 f"layers whose memory a model cannot assign (model and baseline; --json lists them): {unassigned}"
                 if unassigned else ""]
        out.append(render(frame, [Col("convention", "convention", "text"), Col("memory", "memory", "text"),
                                  Col("model_uJ", "model uJ", "uj", "undefined"),
                                  Col("baseline_uJ", "baseline uJ", "uj", "undefined"),
                                  Col("ratio", "ratio", "ratio", "n/a"), Col("break_even", "break-even", "text")],
                          title=f"verdict matrix, {names[0]} ({who}) vs {names[1]} (baseline): estimated energy "
                                f"per image, {workload}, {costs}; counting convention "
                                "x memory model (docs/memory.md); break-even = firing rate at which the model costs "
                                "the baseline", width=width)
                   + "".join(fill(f"  {n}", width, "    ") for n in notes if n))
    return "\n".join(out)


def frontier_text(study: Study, width: int | None = None) -> str:
    """The energy-quality frontier in one table (:func:`reports.tables.frontier_table`): per model its energy per
    image under the frontier's convention and memory model, the lowest and highest over every convention x memory
    model, its domain FID and whether it is on the Pareto front (KID and the rest: the report's table, which
    would not fit 80 columns); '' without a frontier."""
    frontier = study.frontier
    if frontier is None:
        return ""
    frame = tables.frontier_table(study)
    protocols = "; ".join(frontier.protocols) or "no model has one"
    text = render(frame, [Col("model", "model", "name"), Col("energy_uJ_per_image", "uJ", "whole", "undefined"),
                          Col("energy_min_uJ_per_image", "min uJ", "whole"),
                          Col("energy_max_uJ_per_image", "max uJ", "whole"),
                          Col("domain_fid", "FID", "tenths"), Col("on_front", "front", "text")],
                  title=f"energy-quality frontier: estimated energy per image, {study.workload_label}, "
                        f"{frontier.costs}, {frontier.convention} convention, memory {frontier.memory} (min / max: "
                        f"over every convention x memory model), against domain FID (lower is better); front: no "
                        "other model costs less and has a lower FID", width=width)
    notes = [f"FID protocol: {protocols}"] + ([frontier.sampler_note] if frontier.sampler_note else [])
    notes += [f"{p.model}: {p.status}" for p in frontier.points if p.on_front is None and p.quality is not None]
    if len(frontier.protocols) > 1:
        notes.append("FIDs of different protocols are not put on one front: each protocol has its own")
    return text + "".join(fill(f"  {n}", width, "    ") for n in notes)
