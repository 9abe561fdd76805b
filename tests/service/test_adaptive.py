"""Adaptive screening and batching change the cost, never the answer beyond noise."""

import asyncio
import json
import shutil

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from servers import held_calls, until, wait_ready

from service.app import create_app
from service.engine import adaptive, estimator
from service.engine.scoring import Scorer
from service.settings import Settings


def estimate(model, x, k, screening=None, seed=0, chunk_rows=20000):
    return adaptive.estimate_now(model, x, k, seed, chunk_rows, screening).classes


def test_chunking_does_not_change_the_answer(model, images):
    a = estimate(model, images[:3], 200, chunk_rows=20000)
    b = estimate(model, images[:3], 200, chunk_rows=150)  # splits K as well as rows
    assert np.array_equal(a.log_px_y, b.log_px_y)


def test_adaptive_keeps_exhaustive_estimates_for_the_classes_that_matter(model, images):
    screening = adaptive.Screening(samples=32, margin=20.0)
    full = estimate(model, images, 400)
    fast = estimate(model, images, 400, screening)
    kept = fast.num_samples == 400
    assert kept.any() and (fast.num_samples[~kept] == 32).all()
    assert np.array_equal(fast.log_px_y[kept], full.log_px_y[kept])
    assert fast.num_samples.sum() < full.num_samples.sum()
    full_post = estimator.bayes_rule(full, model.log_prior)
    fast_post = estimator.bayes_rule(fast, model.log_prior)
    assert np.abs(full_post.log_px - fast_post.log_px).max() < 0.05
    assert (full_post.log_py_x.argmax(-1) == fast_post.log_py_x.argmax(-1)).all()


def answers_and_batches(model_dir, requests, batching: bool):
    """The answers to `requests` sent at once, and the number of calls in each batched scorer run. The
    first scorer run is held in the model until every request's first call has joined it or is queued."""
    # chunks large enough that every phase's calls (each look of the screening, then the rest of K) go
    # through the batcher, and every request running at once
    settings = Settings(model_dir=model_dir, score_chunk_rows=20000, max_running=len(requests))
    batches = []
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        calls = client.app.state.repository.resolve().inference.calls
        calls.batching = batching  # off: every call on its own, as scoring outside the service runs
        scorer = calls._scorer
        run_batch = scorer.run_batch
        scorer.run_batch = lambda items: batches.append(len(items)) or run_batch(items)
        with held_calls(client.app) as (release, held):

            async def fire():
                transport = httpx.ASGITransport(app=client.app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                    sent = [asyncio.ensure_future(http.post("/v1/log-likelihood", json=r)) for r in requests]
                    if batching:  # every request's first call in the held batch or queued behind it
                        await until(lambda: held and sum(batches) + scorer.waiting == len(requests))
                    release.set()
                    return [r.json() for r in await asyncio.gather(*sent)]

            return client.portal.call(fire), batches


def test_batching_on_and_off_answer_alike_under_concurrency(shipped_model, images):
    requests = [{"images": [images[i].tolist()], "num_samples": 100, "seed": i} for i in range(8)]
    alone, _ = answers_and_batches(shipped_model, requests, batching=False)
    batched, batches = answers_and_batches(shipped_model, requests, batching=True)
    assert batched == alone
    # the 8 requests' first calls ran in the first two scorer runs (the held one, and what queued behind it)
    assert batches[0] + batches[1] >= len(requests)


def test_route_echoes_adaptive_and_the_samples_used(shipped_model, images):
    with TestClient(create_app(Settings(model_dir=shipped_model))) as client:
        while client.get("/readyz").status_code != 200:
            pass
        limits = client.get("/v1/model").json()["limits"]
        body = {"images": [images[0].tolist()], "num_samples": 300, "seed": 0, "include": ["estimates", "settings"]}
        fast = client.post("/v1/log-likelihood", json=body).json()
        full = client.post("/v1/log-likelihood", json={**body, "adaptive": False}).json()
    assert fast["settings"]["adaptive"] is True and full["settings"]["adaptive"] is False
    assert full["results"][0]["num_samples_used"] == [300] * 10
    assert min(fast["results"][0]["num_samples_used"]) == limits["adaptive_screening"][0]["samples"]
    assert abs(fast["results"][0]["log_px"] - full["results"][0]["log_px"]) < 0.05


def test_the_screening_is_the_settings_then_the_models_own_then_the_default():
    own = {"screening": {"samples": 8, "margin": 15.0}}
    assert adaptive.screening_for({}) == adaptive.DEFAULT_SCREENING == adaptive.Screening(64, 20.0)
    assert adaptive.screening_for(own) == adaptive.Screening(8, 15.0)
    assert adaptive.screening_for(own, 32) == adaptive.Screening(32, 15.0)
    assert adaptive.screening_for(own, None, 12.5) == adaptive.Screening(8, 12.5)
    assert adaptive.screening_for({}, 16, None) == adaptive.Screening(16, 20.0)
    rechecked = {"screening": {"samples": 8, "margin": 18.0, "recheck": {"samples": 64, "margin": 16}}}
    assert adaptive.screening_for(rechecked) == adaptive.Screening(8, 18.0, (64, 16.0))
    assert adaptive.screening_for(rechecked, 32) == adaptive.Screening(32, 18.0)  # a setting: that one look alone
    assert adaptive.Screening(8, 18.0, (64, 16.0)).record() == [[8, 18.0], [64, 16.0]]  # as records hold it
    assert adaptive.Screening(8, 18.0, (64, 16.0)).text() == (
        "screening 8 samples, margin 18.0 nats, then 64 samples, margin 16.0 nats"
    )
    for bad, field in (
        ({"samples": 8, "margin": 18.0, "recheck": {"samples": 8, "margin": 16}}, "screening.recheck.samples"),
        ({"samples": 8, "margin": 18.0, "recheck": {"samples": 64}}, "screening.recheck.samples"),
        ({"samples": 0, "margin": 18.0}, "screening.samples"),
    ):
        with pytest.raises(ValueError, match=field.replace(".", r"\.")):
            adaptive.screening_for({"screening": bad})


def test_a_recheck_looks_again_with_more_samples_and_leaves_the_rest_exact(model, images):
    x = np.repeat(images[:4], 2, axis=0)  # eight rows
    full = adaptive.estimate_now(model, x, 200, 3, 4096).classes
    once = adaptive.estimate_now(model, x, 200, 3, 4096, adaptive.Screening(4, 30.0)).classes
    twice = adaptive.estimate_now(model, x, 200, 3, 4096, adaptive.Screening(4, 30.0, (32, 10.0))).classes
    used_once, used_twice = once.num_samples, twice.num_samples
    assert set(np.unique(used_once)) <= {4, 200} and set(np.unique(used_twice)) <= {4, 32, 200}
    assert (used_twice == 32).any()  # the second look screened out some of the first look's classes
    assert ((used_twice == 4) == (used_once == 4)).all()  # the first look is the same look
    kept = used_twice == 200
    assert kept.sum() >= len(x)  # every image keeps at least its best class
    # classes that get all K draw the same samples as without screening
    np.testing.assert_array_equal(twice.log_px_y[kept], full.log_px_y[kept])
    joint = twice.log_px_y + model.log_prior
    best = joint.max(axis=1, keepdims=True)
    images_of, classes_of = np.nonzero(used_twice == 32)
    assert (joint[images_of, classes_of] < best[images_of, 0]).all()  # only classes below the best were left there
    # a recheck that keeps everything in play changes nothing
    wide = adaptive.estimate_now(model, x, 200, 3, 4096, adaptive.Screening(4, 30.0, (32, 1e6))).classes
    np.testing.assert_array_equal(wide.log_px_y, once.log_px_y)


def test_the_service_screens_with_the_models_own_unless_the_settings_say(shipped_model, tmp_path, images):
    own = tmp_path / "model"
    shutil.copytree(shipped_model, own)
    manifest = json.loads((own / "manifest.json").read_text())
    manifest["screening"] = {"samples": 4, "margin": 12.0}
    (own / "manifest.json").write_text(json.dumps(manifest))
    body = {"images": images[:2].tolist(), "num_samples": 64, "include": ["estimates"]}
    with TestClient(create_app(Settings(model_dir=own))) as client:
        wait_ready(client)
        limits = client.get("/v1/model").json()["limits"]
        assert limits["adaptive_screening"] == [{"samples": 4, "margin": 12.0}]
        used = [r["num_samples_used"] for r in client.post("/v1/log-likelihood", json=body).json()["results"]]
        assert min(min(u) for u in used) == 4 and max(max(u) for u in used) == 64
    overridden = Scorer.open(own, screen_samples=16)  # a study's screening, outside the service
    assert [tuple(look) for look in overridden.screening.looks()] == [(16, 12.0)]  # one look: no recheck
    manifest["screening"] = {"samples": 4, "margin": 30.0, "recheck": {"samples": 16, "margin": 5.0}}
    (own / "manifest.json").write_text(json.dumps(manifest))
    with TestClient(create_app(Settings(model_dir=own))) as client:
        wait_ready(client)
        limits = client.get("/v1/model").json()["limits"]
        assert limits["adaptive_screening"] == [{"samples": 4, "margin": 30.0}, {"samples": 16, "margin": 5.0}]
        used = [r["num_samples_used"] for r in client.post("/v1/log-likelihood", json=body).json()["results"]]
        assert {n for u in used for n in u} <= {4, 16, 64} and max(max(u) for u in used) == 64


def test_a_model_with_a_broken_screening_is_refused_with_the_field_named():
    for bad in ({"samples": 0, "margin": 15.0}, {"samples": 8, "margin": -1}, {"samples": "8", "margin": 15.0}):
        with pytest.raises(ValueError, match="screening.samples must be an integer >= 1"):
            adaptive.screening_for({"screening": bad})
