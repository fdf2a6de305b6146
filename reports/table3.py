"""Table III (:func:`profiling.table3.table3`) as terminal text (80 columns) and as Markdown.

Both renderings hold the same figures; the HTML report embeds :func:`render_markdown` or reads the data.
"""

from __future__ import annotations

import textwrap

from profiling.table3 import COUNT_CONVENTIONS, RATE_CONVENTIONS, ModelCounts, Table3

WIDTH = 80
LABEL = 30
CELL = 16


def _giga(value: float) -> str:
    return f"{value / 1e9:.3f} G"


def _mega(value: float) -> str:
    return f"{value / 1e6:.3f} M"


def _rate(rate: float | None) -> str:
    if rate is None:
        return "n/a"
    if rate < 0:
        return "none (<0)"
    if rate > 1:
        return f"none ({rate:.0%})"
    return f"{rate:.2%}"


def _t(row: ModelCounts) -> str:
    return "none (ANN)" if row.time_encoding == "none" else f"{row.time_steps}, {row.time_encoding}"


def _split_name(name: str) -> tuple[str, str]:
    """A model name in at most two header lines of CELL - 1 characters, split after a hyphen."""
    if len(name) < CELL:
        return name, ""
    cut = name.rfind("-", 0, CELL - 1) + 1 or CELL - 1
    return name[:cut], name[cut:][-(CELL - 1):]


def _rows(table: Table3, exact: bool) -> list[tuple[str, list[str]]]:
    models = table.models
    number = (lambda v: f"{v:,}") if exact else _giga
    rows: list[tuple[str, list[str]]] = [
        ("trainable params", [f"{m.trainable_params:,}" if exact else _mega(m.trainable_params) for m in models]),
        ("total params", [f"{m.params:,}" if exact else _mega(m.params) for m in models]),
        ("T, how it enters", [_t(m) for m in models]),
    ]
    rows += [(c.label + f" ({c.unit})" * exact, [number(m.counts[c.key]) for m in models]) for c in COUNT_CONVENTIONS]
    rows += [(c.label.replace("fr-weighted", "fr needed:"), [_rate(m.needed_rates[c.key]) for m in models])
             for c in RATE_CONVENTIONS]
    rows.append(("strict ACs (as run)", [f"{m.strict_acs:,}" for m in models]))
    return rows


def render_text(table: Table3) -> str:
    """Plain text for a terminal, no line over 80 characters."""
    out = ["SDiT paper, Table III, beside this toolkit (per image, one forward, batch 1)", ""]
    out.append(f"{'paper':<{LABEL}}{'params':>{CELL}}{'MACs':>{CELL}}")
    for fig in table.paper:
        out.append(f"{fig.model:<{LABEL}}{fig.params_printed:>{CELL}}{fig.macs_printed:>{CELL}}")
    out.append("")
    heads = [_split_name(m.name) for m in table.models]
    out.append(f"{'ours':<{LABEL}}" + "".join(f"{h[0]:>{CELL}}" for h in heads))
    if any(h[1] for h in heads):
        out.append(" " * LABEL + "".join(f"{h[1]:>{CELL}}" for h in heads))
    for label, cells in _rows(table, exact=False):
        out.append(f"{label[:LABEL - 1]:<{LABEL}}" + "".join(f"{c:>{CELL}}" for c in cells))
    out.append("")
    out.append("Which convention reproduces each figure:")
    for finding in table.findings:
        out += textwrap.wrap(finding.summary, WIDTH, initial_indent="- ", subsequent_indent="  ")
    out.append("")
    out.append("Conventions:")
    for c in table.conventions:
        out += textwrap.wrap(f"{c.label}: {c.description}", WIDTH, initial_indent="- ", subsequent_indent="  ")
    for note in table.notes:
        out += textwrap.wrap(note, WIDTH, initial_indent="- ", subsequent_indent="  ")
    return "\n".join(out) + "\n"


def render_markdown(table: Table3) -> str:
    """A Markdown section: the paper's rows, our counts (exact integers), the findings and the conventions."""
    out = ["## Table III: parameters and MACs per image", ""]
    out += ["| paper | params | MACs |", "| --- | ---: | ---: |"]
    out += [f"| {f.model} | {f.params_printed} | {f.macs_printed} |" for f in table.paper]
    out += ["", "| convention | " + " | ".join(f"`{m.name}`" for m in table.models) + " |",
            "| --- |" + " ---: |" * len(table.models)]
    out += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in _rows(table, exact=True)]
    out += ["", "### Which convention reproduces each figure", ""]
    out += [f"- {f.summary}" for f in table.findings]
    out += ["", "### Conventions", ""]
    out += [f"- **{c.label}** ({c.unit}): {c.description}" for c in table.conventions]
    out += [f"- {note}" for note in table.notes]
    return "\n".join(out) + "\n"
