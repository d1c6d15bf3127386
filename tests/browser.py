"""One way for tests to open a page in a headless browser: Playwright driving the system's Chromium,
Playwright's own browser, or `chromium --headless --screenshot`, whichever this machine has."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """The system's Chromium (or Chrome) binary, if one is on PATH."""
    for name in CHROMIUM_NAMES:
        if found := shutil.which(name):
            return found
    return None


def launch(playwright, chromium: str | None = None):
    """A headless browser: the system's Chromium when there is one, else Playwright's own download."""
    chromium = chromium or find_chromium()
    if chromium:
        return playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
    return playwright.chromium.launch()


def open_page(page: Path, shot: Path) -> list[str]:
    """Open a local page, check every image decoded, save a full-page screenshot and return the console
    errors, page errors and requests that left the page; skips when this machine has no browser."""
    chromium, playwright = find_chromium(), importlib.util.find_spec("playwright")
    if chromium is None and playwright is None:
        pytest.skip("no Chromium found (nor playwright): apt install chromium to run this check")
    try:
        return open_with_playwright(page, shot, chromium)
    except Exception as err:  # no playwright, or no browser it can launch: the system Chromium alone
        if chromium is None:
            pytest.skip(f"no Chromium found (playwright: {type(err).__name__}): apt install chromium to run this check")
        return open_with_chromium(chromium, page, shot)


def open_with_playwright(page: Path, shot: Path, chromium: str | None) -> list[str]:
    """Console errors, page errors and requests that leave the page, with a full-page screenshot."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = launch(p, chromium)
        tab = browser.new_page(viewport={"width": 1200, "height": 900})
        tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        tab.on("pageerror", lambda e: errors.append(str(e)))
        tab.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else errors.append(r.url))
        tab.on("requestfailed", lambda r: errors.append(f"failed: {r.url}"))
        tab.goto(page.as_uri())
        assert tab.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        tab.screenshot(path=str(shot), full_page=True)
        browser.close()
    return errors


def open_with_chromium(chromium: str, page: Path, shot: Path) -> list[str]:
    """The console lines `chromium --headless --screenshot` logs (a page without scripts logs none)."""
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return [line for line in done.stderr.splitlines() if "CONSOLE" in line]
