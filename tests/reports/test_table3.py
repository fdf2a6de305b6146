"""Terminal and Markdown renderings of Table III (reports.table3)."""

from __future__ import annotations

import pytest

from profiling.table3 import table3
from reports.table3 import render_markdown, render_text


@pytest.fixture(scope="module")
def tiny():
    return table3({"dit": "dit-tiny", "sdit": "sdit-tiny", "sdit_authors": "sdit-tiny-authors"})


def test_renderings_hold_the_same_figures(tiny) -> None:
    text, md = render_text(tiny), render_markdown(tiny)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "3.48 G" in text and "1.32 G" in text and "sdit-tiny-" in text
    assert f"{tiny.model('sdit_authors').counts['dense_one_t']:,}" in md  # exact integers in Markdown
    assert md.count("\n| ") >= 2 + 3 + 16
    assert all(f.summary in md for f in tiny.findings)
