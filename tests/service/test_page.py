"""The web page in headless Chromium: draw a stroke, see real numbers from the API."""

import re
import shutil
from pathlib import Path

import pytest
from servers import running_server

playwright = pytest.importorskip("playwright.sync_api")
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
]


@pytest.fixture(scope="module")
def page(shipped_model, tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed: apt-get install chromium (CI installs it)")
    with running_server(shipped_model, log_format="text") as (base, _), playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        tab = browser.new_page()
        errors = []
        tab.on("pageerror", lambda error: errors.append(str(error)))
        tab.goto(base + "/")
        yield tab, errors
        browser.close()


def test_drawing_a_stroke_shows_bars_and_log_px(page):
    tab, errors = page
    tab.fill("#k", "100")
    box = tab.locator("#pad").bounding_box()
    tab.mouse.move(box["x"] + 140, box["y"] + 40)
    tab.mouse.down()
    for step in range(1, 21):
        tab.mouse.move(box["x"] + 140, box["y"] + 40 + step * 10)
    tab.mouse.up()
    tab.wait_for_function("document.querySelectorAll('#bars .bar').length === 10", timeout=30000)
    probs = [float(t) for t in tab.locator("#bars .bar .p").all_inner_texts()]
    assert len(probs) == 10 and abs(sum(probs) - 1) < 0.02
    log_px = float(tab.inner_text("#logpx"))
    assert -800 < log_px < 0
    best = tab.locator("#bars .bar.best").get_attribute("data-class")
    assert probs[int(best)] == max(probs)
    assert re.search(r"Most probable class \d", tab.inner_text("#verdict"))
    assert not errors and tab.inner_text("#error") == ""


def test_sample_grid_and_latent_walk_appear(page):
    tab, errors = page
    tab.select_option("#cls", "7")
    tab.wait_for_function(
        "document.getElementById('grid').dataset.loaded === '1' && document.getElementById('grid').naturalWidth > 0",
        timeout=30000,
    )
    tab.wait_for_function("document.getElementById('strip').dataset.steps === '16'", timeout=30000)
    tab.fill("#t", "15")
    tab.dispatch_event("#t", "input")
    ink = tab.evaluate("""() => {
        const d = document.getElementById('walkimg').getContext('2d').getImageData(0, 0, 168, 168).data;
        let dark = 0; for (let i = 0; i < d.length; i += 4) if (d[i] < 128) dark++; return dark; }""")
    assert ink > 50  # a digit, not a blank canvas
    assert not errors and tab.inner_text("#error") == ""
