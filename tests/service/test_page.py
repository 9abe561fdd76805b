"""The web page in headless Chromium: draw a stroke, see real numbers from the API."""

import base64
import io
import re

import pytest
from browser import offline_tab
from PIL import Image
from servers import running_server

from service.settings import SHIPPED_REPOSITORY


@pytest.fixture(scope="module")
def page(server, browser):
    with offline_tab(browser, server + "/") as (tab, errors, refused):
        yield tab, errors
        assert not refused, f"the page reached beyond loopback: {refused}"


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


@pytest.fixture(scope="module")
def repository_page(browser):
    """The page of a service of the shipped repository: every model, mnist-cvae the default."""
    with running_server(None, model_repository=SHIPPED_REPOSITORY, repository_poll_s=0) as (base, _):
        with offline_tab(browser, base + "/") as (tab, errors, refused):
            yield tab, errors
            assert not refused, f"the page reached beyond loopback: {refused}"


def test_samples_of_another_model_show_its_own_classes(repository_page):
    tab, errors = repository_page
    tab.wait_for_function("document.querySelectorAll('#samplemodel option').length > 1", timeout=30000)
    tab.select_option("#samplemodel", "fashion-cvae")
    tab.wait_for_function(
        "[...document.querySelectorAll('#cls option')].some((o) => o.textContent === 'Trouser')", timeout=30000
    )
    shown = "(document.getElementById('grid').dataset.url || '').includes('{}')"
    tab.wait_for_function(shown.format("model=fashion-cvae&y=0&"), timeout=30000)  # the model's first class
    tab.select_option("#cls", label="Trouser")
    tab.wait_for_function(shown.format("model=fashion-cvae&y=1&"), timeout=30000)
    assert tab.evaluate("document.getElementById('grid').naturalWidth") > 0
    assert not errors and tab.inner_text("#error") == ""


def _draw(tab, points):
    box = tab.locator("#pad").bounding_box()
    tab.mouse.move(box["x"] + points[0][0], box["y"] + points[0][1])
    tab.mouse.down()
    for x, y in points[1:]:
        tab.mouse.move(box["x"] + x, box["y"] + y, steps=4)
    tab.mouse.up()


def test_a_drawing_shows_the_scored_image_and_a_verdict_in_words(page):
    tab, errors = page
    tab.click("#clear")
    tab.fill("#k", "100")
    sent = []

    def record(request):
        if request.url.endswith("/v1/classify"):
            sent.append(request.post_data_json)

    tab.on("request", record)
    # a small "1" in a corner, sent as drawn: the service prepares it as MNIST did, centred and 20 px tall
    _draw(tab, [(30, 20), (30, 60), (30, 100)])
    tab.wait_for_function(
        "document.getElementById('scored').dataset.ink > 0 && document.getElementById('ood').textContent", timeout=30000
    )
    tab.remove_listener("request", record)
    image = sent[-1]["images"][0]
    assert image.startswith("data:image/png;base64,") and sent[-1]["preprocess"] == "mnist" and sent[-1]["invert"]
    assert Image.open(io.BytesIO(base64.b64decode(image.partition(",")[2]))).size == (280, 280)  # the pad's own size
    ink = tab.evaluate("""() => {
        const d = document.getElementById('scored').getContext('2d').getImageData(0, 0, 112, 112).data;
        let rows = [], cols = [];
        for (let i = 0; i < d.length; i += 4) {
            if (d[i] < 128) { rows.push(Math.floor(i / 4 / 112)); cols.push(i / 4 % 112); }
        }
        return {n: rows.length, top: Math.min(...rows), bottom: Math.max(...rows), left: Math.min(...cols),
                right: Math.max(...cols)}; }""")
    assert ink["n"] > 0
    assert ink["bottom"] - ink["top"] >= 17 * 4  # scaled up to the 20-pixel box (4 screen pixels each)
    assert 28 <= (ink["left"] + ink["right"]) / 2 <= 84  # centred, not left in the corner
    assert "digit" in tab.inner_text("#ood")
    assert not errors and tab.inner_text("#error") == ""


def test_the_critics_disagreement_is_said_in_words(page):
    import json

    tab, errors = page

    def disagreeing(route):  # the service's own answer, as if the critic gave the class p = 0.2
        body = route.fetch().json()
        result = body["results"][0]
        result["critic_probs"] = [0.8 / 9] * 10
        result["critic_probs"][result["predicted"]] = 0.2
        result["abstained"], result["abstain_reasons"] = True, ["critic_disagrees"]
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    tab.route("**/v1/classify", disagreeing)
    try:
        tab.click("#clear")
        tab.fill("#k", "100")
        _draw(tab, [(140, 40), (140, 120), (140, 220)])
        tab.wait_for_function("document.getElementById('verdict').textContent.includes('critic')", timeout=30000)
    finally:
        tab.unroute("**/v1/classify", disagreeing)
    assert "gives" in tab.inner_text("#verdict") and "p = 0.200" in tab.inner_text("#verdict")
    assert not errors and tab.inner_text("#error") == ""


def test_a_scribble_is_called_out_of_distribution(page):
    tab, errors = page
    tab.click("#clear")
    tab.fill("#k", "100")
    zigzag = [(20 + 240 * (i % 2), 20 + 12 * i) for i in range(21)]
    _draw(tab, zigzag)
    tab.wait_for_function("document.getElementById('ood').textContent.length > 0", timeout=30000)
    assert "does not look like a handwritten digit" in tab.inner_text("#ood")
    assert tab.get_attribute("#ood", "class") == "out"
    assert not errors and tab.inner_text("#error") == ""


def test_the_samples_box_is_bounded_as_the_api_bounds_it_and_scoring_shows_progress(page):
    tab, errors = page
    tab.click("#clear")
    assert tab.get_attribute("#k", "min") == "2" and tab.get_attribute("#k", "max") == "20000"  # /v1/model's limit
    assert tab.text_content("#served").startswith("Model: mnist-cvae 1.0.0 (Gaussian q")  # the version answering
    tab.fill("#k", "1")
    held = []
    tab.route("**/v1/classify", lambda route: held.append(route))
    _draw(tab, [(140, 40), (140, 140), (140, 240)])
    tab.wait_for_function("document.getElementById('status').textContent === 'Scoring…'", timeout=10000)
    assert tab.get_attribute("#results", "aria-busy") == "true"
    tab.wait_for_function("true")  # let the held request arrive
    assert held, "the page never asked /v1/classify"
    held[0].continue_()
    tab.unroute("**/v1/classify")
    tab.wait_for_function("document.getElementById('results').getAttribute('aria-busy') === 'false'", timeout=30000)
    assert tab.input_value("#k") == "2" and tab.inner_text("#error") == ""  # 1 was raised to the API's minimum
    assert tab.locator("#bars .bar").count() == 10 and not errors


def test_the_walk_has_labelled_frames(page):
    tab, errors = page
    tab.wait_for_function("document.getElementById('strip').dataset.steps === '16'", timeout=30000)
    labels = tab.locator("#strip figure").all_inner_texts()
    assert len(labels) == 16 and labels[0] == "t=0.00" and labels[-1] == "t=1.00"
    tab.locator("#strip figure").nth(5).click()
    assert tab.input_value("#t") == "5" and "frame 6 of 16" in tab.inner_text("#tlabel")
    assert not errors


@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 900}, {"width": 390, "height": 844}])
def test_the_layout_fits_the_screen_and_drawing_works(server, browser, viewport):
    with offline_tab(browser, server + "/", viewport=viewport) as (tab, errors, refused):
        assert tab.is_visible("#hint")
        overflow = tab.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow} px wider than a {viewport['width']} px screen"
        pad = tab.locator("#pad").bounding_box()
        assert pad["x"] >= 0 and pad["x"] + pad["width"] <= viewport["width"]
        tab.fill("#k", "100")
        box = pad
        tab.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.15)
        tab.mouse.down()
        for step in range(1, 11):
            tab.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] * (0.15 + 0.07 * step))
        tab.mouse.up()
        tab.wait_for_function("document.querySelectorAll('#bars .bar').length === 10", timeout=30000)
        assert not tab.is_visible("#hint")
        assert tab.locator("#bars .bar.best").get_attribute("data-class") == "1"  # a vertical stroke
        sections = tab.locator("section").evaluate_all("s => s.map(e => e.getBoundingClientRect().left)")
        if viewport["width"] >= 1000:
            assert len(set(round(x) for x in sections)) >= 2  # the width is used: sections side by side
        assert not errors and not refused, (errors, refused)
