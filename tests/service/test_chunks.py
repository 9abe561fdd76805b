"""A graph run in chunks answers as the one run it replaces."""

import asyncio

import numpy as np
import pytest

from service.engine.runtime import load_model
from service.oip import chunks
from service.settings import Settings

OUTPUTS = ["log_w", "log_px_z", "kl"]


@pytest.mark.parametrize("version", ["1.0.0", "2.0.0"])  # kl in closed form; kl as a mean over K
@pytest.mark.parametrize(("k", "n", "chunk_rows"), [(7, 13, 20), (50, 3, 16), (300, 2, 64)])
def test_scorer_chunks_give_the_unchunked_answer(shipped_model, version, k, n, chunk_rows):
    model = load_model(Settings(model_dir=shipped_model.parent / version))
    session, graph = model.sessions["scorer"], model.manifest["files"]["scorer"]
    rng = np.random.default_rng(0)
    feeds = {
        "x": (rng.random((n, model.x_dim)) > 0.7).astype(np.float32),
        "y": model.one_hot(np.arange(n) % model.num_classes),
        "eps": rng.standard_normal((k, n, model.latent_dim)).astype(np.float32),
    }
    runs = []

    async def call(names, part):
        runs.append(part["eps"].shape[:2])
        return session.run(names, part)

    got = asyncio.run(chunks.run(call, graph, OUTPUTS, feeds, {"N": n, "K": k}, chunk_rows))
    log_w, log_px_z, kl = session.run(OUTPUTS, feeds)
    np.testing.assert_array_equal(got[0], log_w)
    np.testing.assert_array_equal(got[1], log_px_z)
    if k <= chunk_rows or version == "1.0.0":  # every chunk has all K, or kl is the same for every K
        np.testing.assert_array_equal(got[2], kl)
    else:
        np.testing.assert_allclose(got[2], kl, rtol=1e-6)
    assert len(runs) > 1 and all(a * b <= chunk_rows for a, b in runs) and sum(a * b for a, b in runs) == k * n


def test_a_run_within_one_chunk_is_one_call():
    calls = []

    async def call(names, part):
        calls.append(part)
        return [part["z"]]

    graph = {"inputs": {"z": ["N", 2]}, "outputs": {"z": ["N", 2]}}
    z = np.zeros((4, 2), np.float32)
    assert asyncio.run(chunks.run(call, graph, ["z"], {"z": z}, {"N": 4}, 4))[0] is z and len(calls) == 1
