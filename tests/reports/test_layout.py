"""The report as a reader meets it, in Chromium: the verdict on the first screen at 1280 px, long tables
folded, nothing wider than a 390 px phone, no figure title under a mode bar, dark mode followed."""

from __future__ import annotations

from pathlib import Path

import pytest

from profiling.compare import Comparison, with_frontier
from profiling.study import RunInfo
from reports.html import FOLD_ROWS, write_page
from reports.page import build_page
from reports.study import study_from_comparison
from tests.profiling.test_frontier import record
from tests.reports.browser import visit

ARTIFACTS = Path(__file__).resolve().parents[2] / "out" / "test-artifacts"

# Bottom edge (px from the top of the page) of what must be read first, and what else the page is.
FIRST_SCREEN = """(() => {
  const bottom = s => { const e = document.querySelector(s); return e ? e.getBoundingClientRect().bottom : null; };
  return {verdict: bottom('#summary .card'), matrix: bottom('[data-table=verdict_matrix] table'),
          table3: bottom('[data-table=table3_summary] table'), chart: bottom('#fig-sensitivity'),
          screen: window.innerHeight, height: document.documentElement.scrollHeight};
})()"""
FOLDED = f"""Array.from(document.querySelectorAll('figure.table')).map(f => ({{
  name: f.getAttribute('data-table'), rows: f.querySelectorAll('tbody tr').length,
  folded: !!(f.closest('details') && !f.closest('details').open)}})).filter(t => t.rows > {FOLD_ROWS})"""
MODE_BAR = """Array.from(document.querySelectorAll('.plot')).filter(p => {
  const bar = p.querySelector('.modebar'), title = p.querySelector('.gtitle');
  if (!bar || !title || !bar.getBoundingClientRect().width) return false;
  const a = bar.getBoundingClientRect(), b = title.getBoundingClientRect();
  return a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
}).map(p => p.id)"""
WIDTH = """(() => ({scroll: document.documentElement.scrollWidth, inner: window.innerWidth,
  wider: Array.from(document.querySelectorAll('main *, header *, nav *')).filter(e => {
    const r = e.getBoundingClientRect();
    if (!r.width || r.right <= window.innerWidth + 0.5) return false;
    for (let p = e.parentElement; p; p = p.parentElement) {  // inside a box that scrolls or a closed fold
      if (getComputedStyle(p).overflowX !== 'visible' && p.getBoundingClientRect().right <= window.innerWidth + 0.5)
        return false;
      if (p.tagName === 'DETAILS' && !p.open) return false;
    }
    return true;
  }).map(e => e.tagName + '.' + e.className).slice(0, 5)}))()"""
BACKGROUND = "getComputedStyle(document.body).backgroundColor"
PLOT_TEXT = "getComputedStyle(document.querySelector('#fig-sensitivity .gtitle')).fill"
FRONTIER = ("(() => { const p = document.querySelector('#fig-frontier'); "
            "return p && p.querySelectorAll('.scatterlayer .trace').length; })()")


@pytest.fixture(scope="module")
def report(tiny_comparison: Comparison, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page of the tiny study, with a domain FID for each model so that the frontier figure is drawn."""
    run = RunInfo(command="sdit compare sdit-tiny dit-tiny", created="2026-12-01 00:00:00 UTC",
                  versions={"torch": "test"}, device="cpu", git_revision="0" * 40, seed=0)
    study = study_from_comparison(with_frontier(tiny_comparison, {"sdit-tiny": [record(180.0)],
                                                                  "dit-tiny": [record(120.0)]}))
    return write_page(build_page(study, run), tmp_path_factory.mktemp("layout") / "report.html")


def test_wide_screen_shows_the_verdict_first_and_folds_long_tables(report: Path) -> None:
    seen = visit(report, ARTIFACTS / "report-1280-first.png", {"first": FIRST_SCREEN, "folded": FOLDED,
                                                             "mode_bar": MODE_BAR, "width": WIDTH},
                 viewport=(1280, 900), full_page=False)
    assert seen.console_errors == [] and seen.page_errors == [] and seen.blocked_requests == []
    first = seen.results["first"]
    for what in ("verdict", "matrix", "table3", "chart"):  # read without scrolling
        assert first[what] is not None and first[what] <= first["screen"], (what, first)
    assert first["height"] < 8000  # everything folded: the page of two models
    long = seen.results["folded"]
    assert long and all(t["folded"] for t in long), long  # e.g. Table III in full, energy by term
    assert seen.results["mode_bar"] == []
    assert seen.results["width"]["wider"] == []


def test_phone_width_fits_and_dark_mode_is_followed(report: Path) -> None:
    seen = visit(report, ARTIFACTS / "report-390-dark.png", {"width": WIDTH, "background": BACKGROUND,
                                                           "plot_text": PLOT_TEXT, "frontier": FRONTIER},
                 viewport=(390, 844), color_scheme="dark")
    assert seen.console_errors == [] and seen.page_errors == []
    width = seen.results["width"]
    assert width["scroll"] <= width["inner"] == 390 and width["wider"] == [], width
    assert seen.results["background"] == "rgb(13, 17, 23)"  # the dark page
    assert seen.results["plot_text"] == "rgb(230, 237, 243)"  # and the figures' text in its light colour
    assert seen.results["frontier"] == 3  # the frontier drawn: step line, models on the front, dominated ones
