"""Open a report in Debian's chromium through Playwright, offline, and say what happened.

Every request whose URL is not ``file:`` or ``data:`` is aborted and recorded; console
errors, page errors and dialogs (``alert``) are collected; a full-page screenshot is saved.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# The flags under which Debian's chromium runs headless offline (docs/environment.md).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@dataclass
class BrowserVisit:
    """What one visit of a page did and showed."""

    blocked_requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    screenshot: Path | None = None


def chromium_or_skip() -> str:
    """The chromium executable; skips the test (with the reason) where it is not installed."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh --dev installs it as root)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.lock)")
    return executable


def visit(path: Path, screenshot: Path, evaluate: dict[str, str], timeout_ms: int = 60_000,
          viewport: tuple[int, int] = (1280, 900), color_scheme: str = "light",
          full_page: bool = True) -> BrowserVisit:
    """Load ``path`` from a ``file://`` URL, wait for every figure, run the ``evaluate`` scripts.

    Args:
        path: The HTML file.
        screenshot: Where the PNG goes (the full page, or with ``full_page=False`` the first screen).
        evaluate: name -> JavaScript expression, evaluated in the page after it rendered.
        viewport: Width and height of the window, CSS px.
        color_scheme: ``light`` or ``dark``: what ``prefers-color-scheme`` answers.
    """
    from playwright.sync_api import sync_playwright

    executable = chromium_or_skip()
    out = BrowserVisit()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]},
                                    color_scheme=color_scheme)

            def route(r: Any) -> None:
                url = r.request.url
                if url.startswith(("file:", "data:")):
                    r.continue_()
                else:
                    out.blocked_requests.append(url)
                    r.abort()

            page.route("**/*", route)
            page.on("console", lambda m: out.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: out.page_errors.append(str(e)))

            def on_dialog(d: Any) -> None:
                out.dialogs.append(d.message)
                d.dismiss()

            page.on("dialog", on_dialog)
            page.goto(path.resolve().as_uri(), wait_until="load", timeout=timeout_ms)
            page.wait_for_selector("body[data-plots-rendered='true']", timeout=timeout_ms, state="attached")
            for name, expression in evaluate.items():
                out.results[name] = page.evaluate(expression)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=full_page)
            out.screenshot = screenshot
        finally:
            browser.close()
    return out
