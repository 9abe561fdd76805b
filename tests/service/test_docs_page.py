"""/docs and /redoc in headless Chromium with no network but loopback: every endpoint renders, Try it out works."""

from browser import offline_tab


def test_swagger_ui_renders_every_endpoint_and_try_it_out_answers(server, browser):
    import httpx

    schema = httpx.get(server + "/openapi.json").json()
    operations = sum(len(methods) for methods in schema["paths"].values())
    with offline_tab(browser, server + "/docs") as (tab, errors, refused):
        tab.wait_for_selector(".opblock", timeout=30000)
        assert tab.locator(".opblock").count() == operations
        tags = tab.locator(".opblock-tag").all_inner_texts()
        for tag in ("sampling", "scoring", "model", "health", "Open Inference Protocol"):
            assert any(t.startswith(tag) for t in tags), (tag, tags)
        block = tab.locator("#operations-scoring-classify_v1_classify_post")
        block.locator(".opblock-summary").click()
        block.locator("button.execute").click()
        status = block.locator(".live-responses-table tr.response .response-col_status").first
        status.wait_for(timeout=30000)
        assert status.inner_text().strip() == "200"
        assert '"predicted": 3' in block.locator(".live-responses-table").inner_text()  # the example is a 3
        assert not errors and not refused, (errors, refused)


def test_redoc_renders_offline(server, browser):
    with offline_tab(browser, server + "/redoc") as (tab, errors, refused):
        tab.locator("h2", has_text="p(y|x) for every class by Bayes' rule").wait_for(timeout=90000)
        assert tab.get_by_text("Open Inference Protocol").count() >= 1
        assert tab.locator("h2").count() >= 10  # a heading per operation
        assert not errors and not refused, (errors, refused)


def test_every_post_has_an_example(server):
    import httpx

    schema = httpx.get(server + "/openapi.json").json()
    bodiless = {"/v1/models/{name}/versions/{version}/load", "/v1/models/{name}/versions/{version}/unload"}
    for path, methods in schema["paths"].items():
        if "post" not in methods or path in bodiless:
            assert "post" not in methods or "requestBody" not in methods["post"], path  # they take no body
            continue
        content = methods["post"]["requestBody"]["content"]["application/json"]
        ref = content["schema"].get("$ref", "")
        component = schema["components"]["schemas"].get(ref.rsplit("/", 1)[-1], {})
        assert content.get("example") or content.get("examples") or component.get("examples"), path
