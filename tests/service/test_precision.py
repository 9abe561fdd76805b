"""Error bars, the reliability diagnostic, rounds to a requested precision, and the noise streams."""

import numpy as np
import pytest
from fastapi.testclient import TestClient
from servers import wait_ready

from service.app import create_app
from service.engine import adaptive, estimator
from service.settings import Settings


def test_khat_flags_a_heavy_tail_and_passes_a_matched_proposal():
    """Log-normal weights: sigma = 0.3 is a proposal close to its target (all moments finite);
    sigma = 3 has a tail so heavy that K = 1000 draws cannot pin the mean; a Pareto tail of
    shape 0.9 has infinite variance by construction."""
    rng = np.random.default_rng(0)
    k = 1000
    matched = 0.3 * rng.standard_normal((k, 20))
    heavy = 3.0 * rng.standard_normal((k, 20))
    pareto_tail = np.log(rng.pareto(1 / 0.9, (k, 20)) + 1)  # generalized Pareto, shape 0.9
    assert (estimator.khat(matched) < 0.5).all()
    assert (estimator.khat(heavy) > estimator.khat_threshold(k)).all()
    assert np.median(estimator.khat(pareto_tail)) == pytest.approx(0.9, abs=0.15)
    _, _, _, _, reliable = estimator.reduce_log_weights(np.concatenate([matched, heavy], axis=1))
    assert reliable[:20].all() and not reliable[20:].any()


def test_khat_is_arviz_khat():
    arviz = pytest.importorskip("arviz_stats.base.array")
    rng = np.random.default_rng(1)
    for k in (30, 300, 2000):
        log_w = rng.standard_normal((k, 8)) * np.linspace(0.2, 3, 8)
        theirs = [arviz.array_stats.psislw(-log_w[:, r], r_eff=1)[1] for r in range(8)]  # psislw takes -log w
        assert np.allclose(estimator.khat(log_w), theirs, atol=1e-9)


def test_khat_needs_a_tail_to_fit():
    assert np.isnan(estimator.khat(np.zeros((10, 3)))).all()  # K < 25: too few draws
    flat = estimator.khat(np.zeros((100, 1)))
    assert flat[0] == -np.inf  # equal weights: no tail at all


def test_degenerate_weights_give_no_nan():
    """One sample (no spread to measure) and rows whose weights are all zero."""
    one = estimator.reduce_log_weights(np.array([[-3.0, -5.0]]))
    assert np.isinf(one[1]).all() and not np.isnan(np.concatenate(one[:3])).any()
    dead = estimator.reduce_log_weights(np.full((50, 2), -np.inf))
    assert (dead[0] == -np.inf).all() and np.isinf(dead[1]).all() and (dead[2] == 0).all() and not dead[4].any()


def test_streams_differ_for_every_seed_image_class_and_binarization():
    firsts = []
    for seed in (0, 1, 2**32, 2**32 + 1, 2**63 - 1):
        firsts += [g.standard_normal() for g in estimator.noise_streams(seed, 3, 10)]
        firsts.append(estimator.binarization_stream(seed).standard_normal())
    assert len(set(firsts)) == len(firsts)
    again = [g.standard_normal() for g in estimator.noise_streams(2**32, 3, 10)]
    assert again == firsts[62:92]  # and each is reproducible


SCREENING = adaptive.Screening(16, 20.0)


def estimate(model, x, k, precision=None, chunk_rows=20000, screening=SCREENING):
    return adaptive.estimate_now(model, x, k, 7, chunk_rows, screening, precision)


def test_rounds_reach_the_tolerance_and_do_not_depend_on_chunking(model, images):
    """Every image either meets the target or has spent the budget on a class that matters."""
    precision = adaptive.Rounds(tolerance=0.1, budget=8192)
    a = estimate(model, images[:4], 64, precision)
    post = estimator.bayes_rule(a.classes, model.log_prior)
    print(f"std errors {post.log_px_std_error}, reliable {post.reliable}, samples {a.samples_used}")
    assert np.array_equal(a.met, (post.log_px_std_error <= 0.1) & post.reliable)
    matter = np.exp(post.log_py_x) >= estimator.RELEVANT
    assert (a.met | (matter & (a.classes.num_samples == 8192)).any(axis=1)).all()
    assert a.met.any() and a.samples_used.max() > 64 * 10  # the tolerance took more than the first round
    b = estimate(model, images[:4], 64, precision, chunk_rows=300)
    assert np.array_equal(a.classes.log_px_y, b.classes.log_px_y) and np.array_equal(a.samples_used, b.samples_used)
    with_others = estimate(model, np.concatenate([images[:4], images[3::-1]]), 64, precision)
    assert np.array_equal(with_others.classes.log_px_y[:4], a.classes.log_px_y)  # rounds of one image leave others be


def test_an_unmet_tolerance_is_reported_at_the_budget(model, images):
    precision = adaptive.Rounds(tolerance=1e-4, budget=256)
    found = estimate(model, images[:2], 64, precision)
    assert not found.met.any()
    assert found.classes.num_samples.max() == 256


def test_service_answers_with_precision_and_diagnostics(shipped_model, images):
    settings = Settings(model_dir=shipped_model, default_tolerance=0.2)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        limits = client.get("/v1/model").json()["limits"]
        assert limits["default_tolerance"] == 0.2
        request = {"images": images[:2].tolist(), "num_samples": 64, "include": ["estimates", "settings"]}
        body = client.post("/v1/log-likelihood", json=request).json()
        assert body["settings"]["tolerance"] == 0.2 and body["settings"]["max_num_samples"] == settings.max_num_samples
        for r in body["results"]:
            assert r["tolerance_met"] == (r["log_px_std_error"] <= 0.2 and r["log_px_reliable"])
            assert len(r["pareto_k"]) == 10
        single = {"images": images[:1].tolist(), "num_samples": 64, "max_num_samples": 64, "include": ["estimates"]}
        body = client.post("/v1/classify", json={**single, "include": ["estimates", "settings"]}).json()
        assert body["settings"]["tolerance"] is None and "tolerance_met" not in body["results"][0]  # one round
        assert sum(body["results"][0]["num_samples_used"]) <= 640
        bad = client.post("/v1/classify", json={**single, "max_num_samples": 32})
        assert bad.status_code == 422 and "max_num_samples" in bad.json()["error"]


def test_a_real_digit_meets_the_tolerance_or_says_it_did_not(shipped_model, mnist_dir):
    import gzip

    raw = gzip.decompress((mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes())
    digits = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 784)[:2]
    settings = Settings(model_dir=shipped_model)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        request = {"images": digits.tolist(), "num_samples": 500, "tolerance": 0.2, "max_num_samples": 4000}
        request["include"] = ["estimates"]
        body = client.post("/v1/log-likelihood", json=request).json()
    for r in body["results"]:
        met = r["log_px_std_error"] <= 0.2 and r["log_px_reliable"]
        assert r["tolerance_met"] == met
        if not met:  # then a class that matters spent the whole budget
            assert max(r["num_samples_used"]) == 4000
        else:
            assert r["log_px_std_error"] <= 0.2
