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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sdit.artifacts import write_bytes

DATA_ELEMENT_ID = "sdit-data"
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True, "typesetMath": False,
                 "modeBarButtonsToRemove": ["sendDataToCloud"]}


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
    """

    frame: pd.DataFrame
    caption: str
    data_name: str
    number_format: str = ",.5g"
    highlight_rows: tuple[int, ...] = ()
    transpose: bool = False


@dataclass(frozen=True)
class Chart:
    """A Plotly figure, its caption (unit and convention) and the data behind it."""

    figure: Any  # plotly.graph_objects.Figure
    caption: str
    data_name: str
    data: pd.DataFrame
    element_id: str


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
    element_id: str
    title: str
    blocks: list[Any]


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
    name = f"tables/{block.data_name}.csv"
    return (f'<figure class="table" data-table="{esc(block.data_name)}"><div class="scroll"><table>'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
            f"<figcaption>{esc(block.caption)} {_download_link(name)}</figcaption></figure>")


def _download_link(name: str) -> str:
    return f'<a class="download" href="#" data-download="{esc(name)}">download {esc(name.rsplit("/", 1)[-1])}</a>'


def _render_chart(block: Chart) -> str:
    spec = block.figure.to_plotly_json()
    payload = {"data": spec.get("data", []), "layout": spec.get("layout", {})}
    name = f"tables/{block.data_name}.csv"
    return (f'<figure class="chart"><div class="plot" id="{esc(block.element_id)}" '
            f'data-traces="{len(payload["data"])}"></div>'
            f'<script type="application/json" class="plot-spec" data-target="{esc(block.element_id)}">'
            f"{_plotly_json(payload)}</script>"
            f"<figcaption>{esc(block.caption)} {_download_link(name)}</figcaption></figure>")


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
    if isinstance(block, Image):
        uri = "data:image/png;base64," + base64.b64encode(block.png).decode("ascii")
        return (f'<figure class="image"><img src="{uri}" alt="{esc(block.alt)}">'
                f"<figcaption>{esc(block.caption)}</figcaption></figure>")
    if isinstance(block, KeyValues):
        items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in block.items)
        return f"<dl>{items}</dl>"
    raise TypeError(f"unknown block type {type(block).__name__}")


def _files(page: Page) -> dict[str, str]:
    files = dict(page.files)
    for section in page.sections:
        for block in section.blocks:
            if isinstance(block, (Table, Chart)):
                frame = block.frame if isinstance(block, Table) else block.data
                files.setdefault(f"tables/{block.data_name}.csv", frame_csv(frame))
    return files


def tables_of(page: Page) -> dict[str, pd.DataFrame]:
    """Every table and figure data frame of the page, by ``data_name`` (what the CLI writes as CSV)."""
    out: dict[str, pd.DataFrame] = {}
    for section in page.sections:
        for block in section.blocks:
            if isinstance(block, Table):
                out.setdefault(block.data_name, block.frame)
            elif isinstance(block, Chart):
                out.setdefault(block.data_name, block.data)
    return out


_CSS = """
:root { --fg: #1b1f24; --muted: #57606a; --line: #d0d7de; --bg: #ffffff; --panel: #f6f8fa;
        --good: #1a7f37; --bad: #cf222e; --accent: #0969da; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); background: var(--bg); margin: 0; line-height: 1.45; }
header, main, footer { max-width: 1200px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 24px; }
h1 { font-size: 1.7rem; margin: 0 0 4px; }
h2 { font-size: 1.25rem; border-bottom: 1px solid var(--line); padding-bottom: 4px; margin-top: 36px; }
.subtitle, .note, figcaption, .created { color: var(--muted); font-size: 0.9rem; }
nav { margin: 12px 0; font-size: 0.9rem; }
nav a { margin-right: 12px; color: var(--accent); text-decoration: none; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 12px; }
.card { border: 1px solid var(--line); border-left: 5px solid var(--accent); border-radius: 6px;
        padding: 10px 14px; background: var(--panel); }
.card.good { border-left-color: var(--good); } .card.bad { border-left-color: var(--bad); }
.card-title { font-size: 0.85rem; color: var(--muted); text-transform: uppercase; letter-spacing: .03em; }
.card-value { font-size: 1.25rem; font-weight: 600; margin: 4px 0; }
.card-detail { font-size: 0.88rem; }
figure { margin: 16px 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85rem; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: var(--panel); }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.reference td, td.reference, th.reference { font-style: italic; background: #fff8c5; }
tbody th { background: var(--panel); font-weight: 600; white-space: nowrap; }
.plot { width: 100%; min-height: 380px; }
.image img { image-rendering: pixelated; width: 280px; border: 1px solid var(--line); }
.images { display: flex; flex-wrap: wrap; gap: 16px; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; font-size: 0.88rem; }
dt { font-weight: 600; } dd { margin: 0; word-break: break-word; }
a.download { color: var(--accent); }
@media print {
  nav, a.download, .modebar { display: none !important; }
  header, main, footer { max-width: none; padding: 0; }
  h2 { break-after: avoid; }
  figure, .card, tr { break-inside: avoid; }
  .card { background: none; }
  .scroll { overflow: visible; }
}
"""

_JS = """
(function () {
  var data = JSON.parse(document.getElementById("sdit-data").textContent);
  window.SDIT_REPORT = data;
  document.querySelectorAll("a.download").forEach(function (link) {
    link.addEventListener("click", function (event) {
      event.preventDefault();
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
  var config = JSON.parse(document.getElementById("sdit-plot-config").textContent);
  var rendered = 0;
  document.querySelectorAll("script.plot-spec").forEach(function (node) {
    var spec = JSON.parse(node.textContent);
    var target = document.getElementById(node.getAttribute("data-target"));
    Plotly.newPlot(target, spec.data, spec.layout, config).then(function () {
      rendered += 1;
      target.setAttribute("data-rendered", "true");
      if (rendered === document.querySelectorAll("script.plot-spec").length) {
        document.body.setAttribute("data-plots-rendered", "true");
      }
    });
  });
  if (document.querySelectorAll("script.plot-spec").length === 0) {
    document.body.setAttribute("data-plots-rendered", "true");
  }
})();
"""


def render_page(page: Page) -> str:
    """The page as one HTML string (plotly.js inlined when the page has a figure)."""
    has_charts = any(isinstance(b, Chart) for s in page.sections for b in s.blocks)
    plotly_js = ""
    if has_charts:
        from plotly.offline import get_plotlyjs

        plotly_js = f"<script>{get_plotlyjs()}</script>"
    nav = "".join(f'<a href="#{esc(s.element_id)}">{esc(s.title)}</a>' for s in page.sections)
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
        f"<div class=\"created\">{esc(page.created)}</div><nav>{nav}</nav></header>"
        f"<main>{body}</main>"
        f'<script type="application/json" id="{DATA_ELEMENT_ID}">{script_json(embedded)}</script>'
        f'<script type="application/json" id="sdit-plot-config">{script_json(PLOTLY_CONFIG)}</script>'
        f"<script>{_JS}</script></body></html>\n"
    )


def write_page(page: Page, path: Path | str, overwrite: bool = False) -> Path:
    """Render ``page`` and write it atomically through :mod:`sdit.artifacts`."""
    return write_bytes(path, render_page(page).encode("utf-8"), overwrite=overwrite)
