"""Adaptive screening and batching change the cost, never the answer beyond noise."""

import asyncio

import numpy as np
from fastapi.testclient import TestClient

from service import estimator, rounds
from service.app import create_app
from service.settings import Settings


def estimate(model, x, k, screening=None, seed=0, chunk_rows=20000):
    async def score(rows_x, rows_y, eps):
        return model.log_weights(rows_x, rows_y, eps)

    return asyncio.run(
        rounds.estimate_classes(
            score, x, model.num_classes, model.latent_dim, k, seed, chunk_rows, model.log_prior, screening
        )
    ).classes


def test_chunking_does_not_change_the_answer(model, images):
    a = estimate(model, images[:3], 200, chunk_rows=20000)
    b = estimate(model, images[:3], 200, chunk_rows=150)  # splits K as well as rows
    assert np.array_equal(a.log_px_y, b.log_px_y)


def test_adaptive_keeps_exhaustive_estimates_for_the_classes_that_matter(model, images):
    screening = rounds.Screening(samples=32, margin=20.0)
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


def test_batching_on_and_off_answer_alike_under_concurrency(shipped_model, images):
    requests = [{"images": [images[i].tolist()], "num_samples": 100, "seed": i} for i in range(8)]
    answers = {}
    for batching in (False, True):
        # chunks large enough that both phases' calls (640 and 36 rows) go through the batcher
        settings = Settings(model_dir=shipped_model, batching=batching, batch_max_wait_ms=20, score_chunk_rows=20000)
        with TestClient(create_app(settings)) as client:
            while client.get("/readyz").status_code != 200:
                pass

            async def fire():
                import httpx

                transport = httpx.ASGITransport(app=client.app)
                async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                    responses = await asyncio.gather(*(http.post("/v1/log-likelihood", json=r) for r in requests))
                return [r.json() for r in responses]

            answers[batching] = client.portal.call(fire)
            if batching:
                metrics = client.get("/metrics").text
    assert answers[True] == answers[False]
    # at least one scorer call served more than one request's rows
    counts = [line for line in metrics.splitlines() if line.startswith("cvae_model_batch_passes_count")]
    sums = [line for line in metrics.splitlines() if line.startswith("cvae_model_batch_passes_sum")]
    assert counts and sums
    scorer_count = float(next(line for line in counts if 'graph="scorer"' in line).split()[-1])
    assert scorer_count < 2 * len(requests)  # two phases per request, fewer calls when batched


def test_route_echoes_adaptive_and_the_samples_used(shipped_model, images):
    with TestClient(create_app(Settings(model_dir=shipped_model))) as client:
        while client.get("/readyz").status_code != 200:
            pass
        body = {"images": [images[0].tolist()], "num_samples": 300, "seed": 0}
        fast = client.post("/v1/log-likelihood", json=body).json()
        full = client.post("/v1/log-likelihood", json={**body, "adaptive": False}).json()
    assert fast["adaptive"] is True and full["adaptive"] is False
    assert full["results"][0]["num_samples_used"] == [300] * 10
    assert min(fast["results"][0]["num_samples_used"]) == 64
    assert abs(fast["results"][0]["log_px"] - full["results"][0]["log_px"]) < 0.05
