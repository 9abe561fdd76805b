"""Headless Chromium for the page and docs tests, with every network but loopback refused."""

import contextlib
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # no name resolves but loopback's: a request for a CDN fails as on a closed network
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@contextlib.contextmanager
def chromium():
    """Headless Chromium through Playwright (skips where either is missing)."""
    playwright = pytest.importorskip("playwright.sync_api")
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed: apt-get install chromium (CI installs it)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def offline_tab(browser, url: str, viewport: dict | None = None):
    """A tab of `browser` on `url`; yields (tab, page errors, refused outside requests)."""
    context = browser.new_context(viewport=viewport or {"width": 1280, "height": 900})
    refused, errors = [], []

    def gate(route):
        host = urlparse(route.request.url).hostname
        if route.request.url.startswith(("data:", "blob:")) or host in LOOPBACK:
            return route.continue_()
        refused.append(route.request.url)
        return route.abort("internetdisconnected")

    context.route("**/*", gate)
    tab = context.new_page()
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.goto(url)
    try:
        yield tab, errors, refused
    finally:
        context.close()
