"""One self-contained HTML page from sections of cards, tables, figures and images.

The page makes no request of any kind when opened: plotly.js is inlined from the
installed ``plotly`` package, images are ``data:`` URIs, there are no web fonts and no
MathJax. Every piece of text is HTML-escaped here (text that reaches a Plotly figure is
escaped by :mod:`reports.figures`, because Plotly reads a subset of HTML in labels).
The data behind the page is embedded once, as JSON in ``<script type="application/json"
id="sdit-data">``, with ``<`` written as ``\\u003c`` so that no value can close the script;
the download links build their files from it. The same inputs give the same bytes, apart
from the ``created`` text the caller passes.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sdit.artifacts import write_bytes

DATA_ELEMENT_ID = "sdit-data"
# No mode bar: it sat over the figures' titles; every figure's data is a CSV link under it, zoom is a drag and a
# double click resets it.
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True, "typesetMath": False, "displayModeBar": False}
FOLD_ROWS = 8  # a table of more shown rows than this is folded (<details>) unless it says otherwise


@dataclass(frozen=True)
class Card:
    """A headline: a short title, a value in words or numbers, and the detail behind it."""

    title: str
    value: str
    detail: str = ""
    tone: str = "neutral"  # neutral | good | bad: the card's accent colour


@dataclass(frozen=True)
class Cards:
    cards: list[Card]


@dataclass(frozen=True)
class Text:
    """A paragraph of plain text (escaped; no markup)."""

    text: str
    note: bool = False  # rendered smaller and muted


@dataclass(frozen=True)
class Table:
    """A DataFrame rendered as an HTML table, with its CSV downloadable.

    Attributes:
        frame: Rows to show; the index is dropped, so keep labels in columns.
        caption: Says what the table holds, its unit and its convention.
        data_name: File name of the CSV in the embedded data (``tables/<name>.csv``).
        number_format: ``format`` spec for floats; ints are printed with thousands separators.
        highlight_rows: Rows shown as references (italic, tinted).
        transpose: Show one column per row of ``frame`` (headed by its first column's value) and one row per
            other column: a wide table of few rows (models x quantities) then fits the page; the CSV
            keeps ``frame`` as it is.
        title: What the folded table's one line says (default: its data name in words).
        fold: Folded in a ``<details>`` whose line names it, its size and its CSV; ``None``: when it shows
            more than :data:`FOLD_ROWS` rows.
        csv: The CSV the download link gives (default ``data_name``: this table's own frame); a short table
            shown from a longer one names the longer one's.
    """

    frame: pd.DataFrame
    caption: str
    data_name: str
    number_format: str = ",.5g"
    highlight_rows: tuple[int, ...] = ()
    transpose: bool = False
    title: str = ""
    fold: bool | None = None
    csv: str = ""

    def shown_rows(self) -> int:
        return len(self.frame.columns) - 1 if self.transpose else len(self.frame)

    def folded(self) -> bool:
        return self.shown_rows() > FOLD_ROWS if self.fold is None else self.fold


@dataclass(frozen=True)
class Chart:
    """A Plotly figure, its caption (unit and convention) and the data behind it; ``fold``: shown folded in a
    ``<details>`` whose line says ``title``."""

    figure: Any  # plotly.graph_objects.Figure
    caption: str
    data_name: str
    data: pd.DataFrame
    element_id: str
    fold: bool = False
    title: str = ""


@dataclass(frozen=True)
class Fold:
    """Blocks folded in a ``<details>`` element (opened for printing) under a one-line ``title``."""

    title: str
    blocks: list[Any]


@dataclass(frozen=True)
class Columns:
    """Blocks side by side on a wide screen (the first takes ``first`` of the width), one under the other on
    a narrow one; a list in ``blocks`` is one column of blocks."""

    blocks: list[Any]
    first: str = "1fr"


@dataclass(frozen=True)
class Image:
    png: bytes
    alt: str
    caption: str


@dataclass(frozen=True)
class KeyValues:
    """A definition list: term -> description."""

    items: list[tuple[str, str]]


@dataclass(frozen=True)
class Section:
    """A titled part of the page; ``toc``: its shorter name in the table of contents (default the title)."""

    element_id: str
    title: str
    blocks: list[Any]
    toc: str = ""


@dataclass(frozen=True)
class Page:
    """Everything the report shows.

    Attributes:
        title: The page title.
        subtitle: One line under the title (models and workload).
        sections: In order.
        data: JSON-able data embedded in the page (``comparison``, anything else).
        files: Extra downloadable text files, name -> text, embedded beside the tables' CSV.
        created: The date line; the only part of the page allowed to differ between runs.
    """

    title: str
    subtitle: str
    sections: list[Section]
    data: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    created: str = ""


def esc(text: Any) -> str:
    """HTML-escape ``str(text)``, quotes included."""
    return html.escape(str(text), quote=True)


def script_json(obj: Any) -> str:
    """JSON safe inside a ``<script>`` element: ``<``, ``>``, ``&`` and line separators escaped."""
    text = json.dumps(obj, sort_keys=False, separators=(",", ":"), allow_nan=False, default=_json_default)
    for char, code in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                       ("\u2029", "\\u2029")):
        text = text.replace(char, code)
    return text


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"cannot embed {type(value).__name__} in the page's JSON")


def frame_csv(frame: pd.DataFrame) -> str:
    """The CSV of a table exactly as it is written beside the report (full precision, no index)."""
    return frame.to_csv(index=False, lineterminator="\n", float_format=None)


def format_value(value: Any, number_format: str = ",.4g") -> str:
    """A table cell in words: ints with separators, floats by ``number_format``, missing as an em dash."""
    if hasattr(value, "item") and not isinstance(value, (list, tuple, str)):
        value = value.item()  # numpy scalar -> Python
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "\u2014"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:  # a count held as float (a column with gaps)
            return f"{int(value):,}"
        return format(value, number_format)
    return str(value)


def _header(name: Any) -> str:
    """A column name that may wrap after its underscores (``energy_uJ_per_image_...`` headers are long)."""
    return esc(name).replace("_", "_<wbr>")


def _cell(value: Any, number_format: str, classes: tuple[str, ...] = ()) -> str:
    numeric = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    names = " ".join((*(("num",) if numeric else ()), *classes))
    attr = f' class="{names}"' if names else ""
    return f"<td{attr}>{esc(format_value(value, number_format))}</td>"


def _details(summary: str, body: str, kind: str) -> str:
    """``body`` folded under a one-line ``summary`` (markup, escaped by the caller)."""
    return f'<details class="fold {kind}"><summary>{summary}</summary>{body}</details>'


def _render_table(block: Table) -> str:
    frame = block.frame
    if block.transpose:
        refs = [' class="reference"' if i in block.highlight_rows else "" for i in range(len(frame))]
        head = f'<th scope="col">{_header(frame.columns[0])}</th>' + "".join(
            f'<th scope="col"{refs[i]}>{esc(format_value(v))}</th>' for i, v in enumerate(frame.iloc[:, 0]))
        rows = [f'<tr><th scope="row">{_header(col)}</th>'
                + "".join(_cell(v, block.number_format, ("reference",) if i in block.highlight_rows else ())
                          for i, v in enumerate(frame[col])) + "</tr>"
                for col in frame.columns[1:]]
    else:
        head = "".join(f'<th scope="col">{_header(c)}</th>' for c in frame.columns)
        rows = []
        for i, row in enumerate(frame.itertuples(index=False, name=None)):
            cls = ' class="reference"' if i in block.highlight_rows else ""
            rows.append(f"<tr{cls}>{''.join(_cell(v, block.number_format) for v in row)}</tr>")
    name = f"tables/{block.csv or block.data_name}.csv"
    table = (f'<figure class="table" data-table="{esc(block.data_name)}"><div class="scroll"><table>'
             f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
             f"<figcaption>{esc(block.caption)} {_download_link(name)}</figcaption></figure>")
    if not block.folded():
        return table
    title = block.title or block.data_name.replace("_", " ")
    return _details(f'<span class="what">table: {esc(title)}</span> <span class="size">{block.shown_rows()} rows'
                    f"</span> {_download_link(name)}", table, "fold-table")


def _download_link(name: str) -> str:
    return f'<a class="download" href="#" data-download="{esc(name)}">{esc(name.rsplit("/", 1)[-1])}</a>'


def _render_chart(block: Chart) -> str:
    spec = block.figure.to_plotly_json()
    payload = {"data": spec.get("data", []), "layout": spec.get("layout", {})}
    name = f"tables/{block.data_name}.csv"
    chart = (f'<figure class="chart"><div class="plot" id="{esc(block.element_id)}" '
             f'data-traces="{len(payload["data"])}"></div>'
             f'<script type="application/json" class="plot-spec" data-target="{esc(block.element_id)}">'
             f"{_plotly_json(payload)}</script>"
             f"<figcaption>{esc(block.caption)} {_download_link(name)}</figcaption></figure>")
    if not block.fold:
        return chart
    return _details(f'<span class="what">figure: {esc(block.title or block.data_name)}</span> '
                    f"{_download_link(name)}", chart, "fold-chart")


def _plotly_json(payload: dict[str, Any]) -> str:
    import plotly.io

    text = plotly.io.to_json(payload, validate=False, pretty=False, engine="json")
    for char, code in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, code)
    return text


def _render_block(block: Any) -> str:
    if isinstance(block, Cards):
        cards = "".join(
            f'<div class="card {esc(c.tone)}"><div class="card-title">{esc(c.title)}</div>'
            f'<div class="card-value">{esc(c.value)}</div><div class="card-detail">{esc(c.detail)}</div></div>'
            for c in block.cards)
        return f'<div class="cards">{cards}</div>'
    if isinstance(block, Text):
        return f'<p class="{"note" if block.note else "text"}">{esc(block.text)}</p>'
    if isinstance(block, Table):
        return _render_table(block)
    if isinstance(block, Chart):
        return _render_chart(block)
    if isinstance(block, Fold):
        return _details(f'<span class="what">{esc(block.title)}</span>',
                        "".join(_render_block(b) for b in block.blocks), "fold-blocks")
    if isinstance(block, Columns):
        inner = "".join(f'<div class="column">{"".join(_render_block(c) for c in _column(b))}</div>'
                        for b in block.blocks)
        return f'<div class="columns" style="--first: {esc(block.first)}">{inner}</div>'
    if isinstance(block, Image):
        uri = "data:image/png;base64," + base64.b64encode(block.png).decode("ascii")
        return (f'<figure class="image"><img src="{uri}" alt="{esc(block.alt)}">'
                f"<figcaption>{esc(block.caption)}</figcaption></figure>")
    if isinstance(block, KeyValues):
        items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in block.items)
        return f"<dl>{items}</dl>"
    raise TypeError(f"unknown block type {type(block).__name__}")


def _column(block: Any) -> list[Any]:
    """A column of :class:`Columns`: one block, or a list of blocks one under the other."""
    return list(block) if isinstance(block, list) else [block]


def _blocks(blocks: list[Any]) -> Iterator[Any]:
    """Every block, those inside folds and columns included, in page order."""
    for block in blocks:
        yield block
        if isinstance(block, Fold):
            yield from _blocks(block.blocks)
        elif isinstance(block, Columns):
            yield from _blocks([c for b in block.blocks for c in _column(b)])


def _data_blocks(page: Page) -> Iterator[tuple[str, pd.DataFrame]]:
    """(data name, frame) of each table and figure whose frame is a CSV of the page (a table shown from
    another's CSV adds none)."""
    for section in page.sections:
        for block in _blocks(section.blocks):
            if isinstance(block, Table) and not block.csv:
                yield block.data_name, block.frame
            elif isinstance(block, Chart):
                yield block.data_name, block.data


def _files(page: Page) -> dict[str, str]:
    files = dict(page.files)
    for name, frame in _data_blocks(page):
        files.setdefault(f"tables/{name}.csv", frame_csv(frame))
    return files


def tables_of(page: Page) -> dict[str, pd.DataFrame]:
    """Every table and figure data frame of the page, by ``data_name`` (what the CLI writes as CSV)."""
    out: dict[str, pd.DataFrame] = {}
    for name, frame in _data_blocks(page):
        out.setdefault(name, frame)
    return out


_CSS = """
:root { color-scheme: light dark;
        --fg: #1b1f24; --muted: #57606a; --line: #d0d7de; --bg: #ffffff; --panel: #f6f8fa;
        --good: #1a7f37; --bad: #cf222e; --accent: #0969da; --ref: #fff8c5; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e6edf3; --muted: #9198a1; --line: #3d444d; --bg: #0d1117; --panel: #151b23;
          --good: #3fb950; --bad: #f85149; --accent: #4493f8; --ref: #3a3000; }
}
* { box-sizing: border-box; }
html { scroll-padding-top: 48px; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); background: var(--bg); margin: 0; line-height: 1.4; }
header, main, footer { max-width: 1240px; margin: 0 auto; padding: 0 20px; }
header { padding-top: 12px; }
h1 { font-size: 1.35rem; margin: 0 0 2px; overflow-wrap: anywhere; }
h2 { font-size: 1.15rem; border-bottom: 1px solid var(--line); padding-bottom: 3px; margin: 24px 0 8px; }
#summary h2 { margin-top: 8px; }
p { margin: 6px 0; }
.subtitle, .note, figcaption, .created, summary { color: var(--muted); font-size: 0.86rem; }
.subtitle, .created { overflow-wrap: anywhere; }
nav.toc { position: sticky; top: 0; z-index: 10; background: var(--bg); border-bottom: 1px solid var(--line);
          padding: 6px 20px; font-size: 0.85rem; display: flex; flex-wrap: wrap; gap: 2px 14px; }
nav.toc a { color: var(--accent); text-decoration: none; white-space: nowrap; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: 8px; }
.card { border: 1px solid var(--line); border-left: 5px solid var(--accent); border-radius: 6px;
        padding: 6px 12px; background: var(--panel); min-width: 0; overflow-wrap: anywhere; }
.card.good { border-left-color: var(--good); } .card.bad { border-left-color: var(--bad); }
.card-title { font-size: 0.78rem; color: var(--muted); text-transform: uppercase; letter-spacing: .03em; }
.card-value { font-size: 1.08rem; font-weight: 600; margin: 2px 0; }
.card-detail { font-size: 0.84rem; }
#summary .cards { grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); }
#summary .card-value { font-size: 1.2rem; }
figure { margin: 8px 0; min-width: 0; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.84rem; }
th, td { border: 1px solid var(--line); padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: var(--panel); }
td { overflow-wrap: break-word; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; overflow-wrap: normal; }
tr.reference td, td.reference, th.reference { font-style: italic; background: var(--ref); }
td.good { color: var(--good); font-weight: 600; } td.bad { color: var(--bad); font-weight: 600; }
tbody th { background: var(--panel); font-weight: 600; white-space: nowrap; }
.plot { width: 100%; min-height: 300px; }
details.fold { border: 1px solid var(--line); border-radius: 6px; margin: 8px 0; padding: 0 10px; }
details.fold > summary { cursor: pointer; padding: 5px 0; }
details.fold > summary .what { color: var(--fg); font-weight: 600; }
details.fold[open] > summary { border-bottom: 1px solid var(--line); }
.columns { display: grid; grid-template-columns: 1fr; gap: 4px 20px; }
.column { min-width: 0; }
figure.image { display: inline-block; vertical-align: top; width: 250px; max-width: 100%; margin-right: 16px; }
.image img { image-rendering: pixelated; width: 240px; max-width: 100%; border: 1px solid var(--line); }
dl { display: grid; grid-template-columns: minmax(8em, max-content) minmax(0, 1fr); gap: 3px 14px;
     font-size: 0.84rem; }
dt { font-weight: 600; overflow-wrap: anywhere; } dd { margin: 0; overflow-wrap: anywhere; min-width: 0; }
a.download { color: var(--accent); }
a.download::before { content: "CSV "; }
a.download[data-download$=".json"]::before { content: "JSON "; }
@media (min-width: 1000px) {
  .columns { grid-template-columns: var(--first) 1fr; }
}
@media (max-width: 640px) {
  header, main, footer { padding: 0 10px; }
  nav.toc { position: static; flex-wrap: nowrap; overflow-x: auto; padding: 4px 10px; }
  dl { grid-template-columns: minmax(0, 1fr); } dd { margin-bottom: 4px; }
  .cards, #summary .cards { grid-template-columns: minmax(0, 1fr); }
}
@media print {
  :root { color-scheme: light; --fg: #000; --muted: #333; --line: #bbb; --bg: #fff; --panel: #f4f4f4;
          --ref: #fff8c5; }
  nav.toc, a.download { display: none !important; }
  header, main, footer { max-width: none; padding: 0; }
  h2 { break-after: avoid; }
  figure, .card, tr { break-inside: avoid; }
  .card { background: none; }
  .scroll { overflow: visible; }
  details.fold { border: none; padding: 0; }
}
"""

_JS = """
(function () {
  var data = JSON.parse(document.getElementById("sdit-data").textContent);
  window.SDIT_REPORT = data;
  document.querySelectorAll("a.download").forEach(function (link) {
    link.addEventListener("click", function (event) {
      event.preventDefault();
      event.stopPropagation();
      var name = link.getAttribute("data-download");
      var text = data.files[name];
      var type = name.endsWith(".json") ? "application/json" : "text/csv";
      var url = URL.createObjectURL(new Blob([text], {type: type + ";charset=utf-8"}));
      var a = document.createElement("a");
      a.href = url; a.download = name.split("/").pop();
      document.body.appendChild(a); a.click(); a.remove();
      setTimeout(function () { URL.revokeObjectURL(url); }, 1000);
    });
  });
  // Figures follow the page's colour scheme: transparent backgrounds, text and grid in the scheme's colours.
  var scheme = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
  function theme(layout, dark) {
    var fg = dark ? "#e6edf3" : "#1b1f24", grid = dark ? "#30363d" : "#e6eaef", axis = dark ? "#6e7681" : "#8c959f";
    var out = {"font.color": fg, "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)"};
    Object.keys(layout).concat(["xaxis", "yaxis"]).forEach(function (key) {
      if (/^[xy]axis[0-9]*$/.test(key)) {
        out[key + ".gridcolor"] = grid; out[key + ".zerolinecolor"] = axis; out[key + ".linecolor"] = axis;
      }
    });
    return out;
  }
  function apply(layout, flat) {
    Object.keys(flat).forEach(function (path) {
      var keys = path.split("."), node = layout;
      for (var i = 0; i < keys.length - 1; i++) { node[keys[i]] = node[keys[i]] || {}; node = node[keys[i]]; }
      node[keys[keys.length - 1]] = flat[path];
    });
    return layout;
  }
  // A title longer than its figure is wide wraps (Plotly would cut it); on a phone the title is smaller and the
  // legend goes under the plot (above, its rows would cover the title).
  function fit(layout, width, entries) {
    var phone = window.innerWidth <= 640, room = Math.max(20, Math.floor((width - 20) / (phone ? 6.6 : 7.6)));
    var title = layout.title || {}, lines = [""];
    String(title.text || "").split(" ").forEach(function (w) {
      var last = lines[lines.length - 1];
      if (last && (last + " " + w).length > room) { lines.push(w); }
      else { lines[lines.length - 1] = last ? last + " " + w : w; }
    });
    title.text = lines.join("<br>");
    var margin = Object.assign({t: 50, b: 60}, layout.margin);
    margin.t += (phone ? 16 : 18) * (lines.length - 1);
    if (phone) {
      title.font = Object.assign({}, title.font, {size: 12});
      margin.l = 50; margin.r = 10;
      if (layout.legend && layout.legend.y > 1) {
        margin.t = 24 + 16 * lines.length;
        layout.legend = Object.assign({}, layout.legend, {yref: "container", y: 0, yanchor: "bottom"});
        margin.b += 20 * ((entries + 1) >> 1);
      }
    }
    layout.title = title; layout.margin = margin;
    return layout;
  }
  var config = JSON.parse(document.getElementById("sdit-plot-config").textContent);
  var specs = document.querySelectorAll("script.plot-spec");
  var rendered = 0;
  var dark = !!(scheme && scheme.matches);
  specs.forEach(function (node) {
    var spec = JSON.parse(node.textContent);
    var target = document.getElementById(node.getAttribute("data-target"));
    var entries = spec.data.filter(function (t) { return t.showlegend !== false; }).length;
    var layout = fit(apply(spec.layout, theme(spec.layout, dark)), target.clientWidth || 700, entries);
    Plotly.newPlot(target, spec.data, layout, config).then(function () {
      rendered += 1;
      target.setAttribute("data-rendered", "true");
      if (rendered === specs.length) { document.body.setAttribute("data-plots-rendered", "true"); }
    });
  });
  if (specs.length === 0) { document.body.setAttribute("data-plots-rendered", "true"); }
  if (scheme && scheme.addEventListener) {
    scheme.addEventListener("change", function (event) {
      document.querySelectorAll(".plot[data-rendered]").forEach(function (plot) {
        Plotly.relayout(plot, theme(plot.layout, event.matches));
      });
    });
  }
  // A figure drawn inside a closed fold has no width: size it when the fold opens.
  document.querySelectorAll("details.fold").forEach(function (fold) {
    fold.addEventListener("toggle", function () {
      if (!fold.open) { return; }
      fold.querySelectorAll(".plot[data-rendered]").forEach(function (p) { Plotly.Plots.resize(p); });
    });
  });
  // Printed, every fold is open; afterwards each is as the reader left it.
  var closed = [];
  window.addEventListener("beforeprint", function () {
    closed = Array.prototype.filter.call(document.querySelectorAll("details"), function (d) { return !d.open; });
    closed.forEach(function (d) { d.open = true; });
  });
  window.addEventListener("afterprint", function () { closed.forEach(function (d) { d.open = false; }); closed = []; });
})();
"""


def render_page(page: Page) -> str:
    """The page as one HTML string (plotly.js inlined when the page has a figure)."""
    has_charts = any(isinstance(b, Chart) for s in page.sections for b in _blocks(s.blocks))
    plotly_js = ""
    if has_charts:
        from plotly.offline import get_plotlyjs

        plotly_js = f"<script>{get_plotlyjs()}</script>"
    nav = "".join(f'<a href="#{esc(s.element_id)}">{esc(s.toc or s.title)}</a>' for s in page.sections)
    body = "".join(
        f'<section id="{esc(s.element_id)}"><h2>{esc(s.title)}</h2>{"".join(_render_block(b) for b in s.blocks)}'
        "</section>" for s in page.sections)
    embedded = {**page.data, "files": _files(page)}
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # No request may leave the page: everything is inline, data: images only.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; img-src data: blob:; "
        "font-src 'none'; connect-src 'none'\">"
        f"<title>{esc(page.title)}</title><style>{_CSS}</style>{plotly_js}</head>"
        f"<body><header><h1>{esc(page.title)}</h1><div class=\"subtitle\">{esc(page.subtitle)}</div>"
        f"<div class=\"created\">{esc(page.created)}</div></header>"
        f'<nav class="toc" aria-label="contents">{nav}</nav>'
        f"<main>{body}</main>"
        f'<script type="application/json" id="{DATA_ELEMENT_ID}">{script_json(embedded)}</script>'
        f'<script type="application/json" id="sdit-plot-config">{script_json(PLOTLY_CONFIG)}</script>'
        f"<script>{_JS}</script></body></html>\n"
    )


def write_page(page: Page, path: Path | str, overwrite: bool = False) -> Path:
    """Render ``page`` and write it atomically through :mod:`sdit.artifacts`."""
    return write_bytes(path, render_page(page).encode("utf-8"), overwrite=overwrite)
