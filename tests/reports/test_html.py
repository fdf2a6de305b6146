from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest

from reports.html import Card, Cards, Chart, Image, Page, Section, Table, Text, render_page, script_json, write_page
from sdit.artifacts import OverwriteError
from tests.reports.browser import visit

EVIL = "<script>alert(1)</script>"
PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010800000000"
    "3a7e9b550000000a49444154789c63600000000200015e2d1b8e0000000049454e44ae426082")


def _page(label: str = "model-a", created: str = "2026-12-01") -> Page:
    frame = pd.DataFrame({"model": [label, "b"], "macs": [1_234_567, 89], "energy_uj": [1.5, 0.25]})
    fig = go.Figure([go.Bar(name="a", x=["x", "y"], y=[1, 2]), go.Bar(name="b", x=["x", "y"], y=[2, 1])])
    return Page(
        title=f"report of {label}", subtitle="sub", created=created,
        sections=[Section("s1", "Headline", [Cards([Card(label, "1 uJ", f"detail {label}", "good")]),
                                               Text(f"text {label}")]),
                  Section("s2", "Table", [Table(frame, f"caption {label}", "t1")]),
                  Section("s3", "Figure", [Chart(fig, "uJ per image, strict", "f1", frame, "fig-1"),
                                           Image(PNG_1X1, label, "samples")])],
        data={"comparison": {"label": label}},
    )


def test_text_is_escaped_everywhere() -> None:
    text = render_page(_page(EVIL))
    assert EVIL not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    data = re.search(r'<script type="application/json" id="sdit-data">(.*?)</script>', text, re.S).group(1)
    assert json.loads(data)["comparison"]["label"] == EVIL  # the embedded data keeps the raw text


def test_script_json_cannot_close_its_element() -> None:
    text = script_json({"k": "</script><!-- & \u2028"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"k": "</script><!-- & \u2028"}


def test_deterministic_apart_from_date_and_self_contained() -> None:
    a, b = render_page(_page(created="date-A")), render_page(_page(created="date-B"))
    assert a != b and a.replace("date-A", "date-B") == b
    assert render_page(_page(created="date-A")) == a
    markup = re.sub(r"<script[^>]*>.*?</script>", "", a, flags=re.S)
    assert not re.search(r'(src|href)\s*=\s*"(?!data:|#)', markup)  # no URL but data: and anchors
    assert "<script src" not in a and "<link" not in a and "@font-face" not in a


def test_embedded_csv_is_the_table(tmp_path: Path) -> None:
    page = _page()
    text = render_page(page)
    data = json.loads(re.search(r'id="sdit-data">(.*?)</script>', text, re.S).group(1))
    assert data["files"]["tables/t1.csv"] == "model,macs,energy_uj\nmodel-a,1234567,1.5\nb,89,0.25\n"
    assert "1,234,567" in text  # the shown cell, with separators


def test_write_page_refuses_to_overwrite(tmp_path: Path) -> None:
    path = write_page(_page(), tmp_path / "r.html")
    with pytest.raises(OverwriteError):
        write_page(_page(), path)
    write_page(_page(created="later"), path, overwrite=True)
    assert "later" in path.read_text()


def test_page_in_browser_is_offline_and_inert(tmp_path: Path) -> None:
    path = write_page(_page(EVIL), tmp_path / "r.html")
    seen = visit(path, tmp_path / "shot.png", {
        "traces": "document.getElementById('fig-1').data.length",
        "svg_bars": "document.querySelectorAll('#fig-1 .bars path').length",
        "card": "document.querySelector('.card-title').textContent",
        "injected": "document.querySelectorAll('main script:not([type])').length",
    })
    assert seen.blocked_requests == []
    assert seen.console_errors == [] and seen.page_errors == []
    assert seen.dialogs == []  # alert(1) never ran
    assert seen.results["traces"] == 2 and seen.results["svg_bars"] == 4
    assert seen.results["card"] == EVIL and seen.results["injected"] == 0
    assert seen.screenshot is not None and seen.screenshot.stat().st_size > 10_000
