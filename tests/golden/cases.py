"""The golden requests: every /v1 and /v2 endpoint, on both shipped versions, with fixed seeds.

Their recorded answers are tests/golden/answers.json, compared by tests/test_golden.py; after a change
that is meant to change an answer, rewrite them with

    python tests/golden/cases.py

and say in the commit why they changed. Fields that depend on the machine or the clock (VOLATILE) are
recorded by their type only.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
ANSWERS = Path(__file__).with_name("answers.json")
VERSIONS = ("1.0.0", "2.0.0")
VOLATILE = {"loaded_at", "max_work", "in_flight"}  # the clock, this machine's speed, the moment

BLANK = [0.0] * 784
BLOCK = [[0.0] * 28] * 10 + [[0.0] * 10 + [1.0] * 8 + [0.0] * 10] * 8 + [[0.0] * 28] * 10  # a square of ink
NOISE = np.random.default_rng(7).integers(0, 256, 784).tolist()  # bytes, not a digit


def _digit() -> str:
    from service.schemas import DIGIT_PNG

    return DIGIT_PNG


def _one_hot(y: int) -> list[float]:
    return [1.0 if i == y else 0.0 for i in range(10)]


def cases() -> list[dict]:
    """(name, method, path, query, body) of every golden request."""
    digit = _digit()
    images = [digit, BLANK, BLOCK, NOISE]
    eps = np.random.default_rng(3).standard_normal((3, 2, 32)).astype(np.float32).ravel().tolist()
    every = ["estimates", "elbo", "ood", "critic", "settings"]
    found = [
        ("health", "GET", "/healthz", {}, None),
        ("ready", "GET", "/readyz", {}, None),
        ("models", "GET", "/v1/models", {}, None),
        ("v2 server", "GET", "/v2", {}, None),
        ("v2 live", "GET", "/v2/health/live", {}, None),
        ("v2 ready", "GET", "/v2/health/ready", {}, None),
        ("unknown version", "GET", "/v1/model", {"version": "7.0.0"}, None),
        ("unknown field", "POST", "/v1/classify", {}, {"images": [BLANK], "seed": 0, "num_sample": 10}),
        ("short image", "POST", "/v1/classify", {}, {"images": [[0.0] * 783], "seed": 0}),
        ("unknown graph", "GET", "/v2/models/critic", {}, None),
    ]
    for v in VERSIONS:
        pin = {"version": v}
        found += [
            (f"{v} model", "GET", "/v1/model", pin, None),
            (f"{v} model with manifest", "GET", "/v1/model", pin | {"include": "manifest"}, None),
            (f"{v} classify", "POST", "/v1/classify", pin, {"images": images, "seed": 0}),
            (f"{v} classify, every diagnostic", "POST", "/v1/classify", pin,
             {"images": images, "seed": 0, "include": every + ["x"]}),
            (f"{v} classify, exhaustive", "POST", "/v1/classify", pin,
             {"images": [digit, BLOCK], "seed": 1, "num_samples": 100, "adaptive": False, "include": ["estimates"]}),
            (f"{v} classify, inverted and prepared", "POST", "/v1/classify", pin,
             {"images": [[[1.0 - p for p in row] for row in BLOCK]], "seed": 2, "invert": True, "preprocess": "mnist",
              "binarize": "bernoulli", "min_probability": 0.9, "ood_fpr": 0.05, "include": ["settings"]}),
            (f"{v} log-likelihood", "POST", "/v1/log-likelihood", pin, {"images": images, "seed": 0}),
            (f"{v} log-likelihood, tolerance", "POST", "/v1/log-likelihood", pin,
             {"images": [digit], "seed": 0, "tolerance": 0.1, "include": ["estimates", "settings"]}),
            (f"{v} samples", "POST", "/v1/samples", pin, {"n": 2, "y": 7, "seed": 1, "binary": True}),
            (f"{v} samples of z", "POST", "/v1/samples", pin, {"z": [[0.0] * 32, [0.5] * 32], "seed": 1}),
            (f"{v} samples of p(y)", "POST", "/v1/samples", pin, {"n": 3, "seed": 4}),
            (f"{v} samples.png", "GET", "/v1/samples.png", pin | {"y": 3, "n": 4, "seed": 5}, None),
            (f"{v} encode", "POST", "/v1/encode", pin, {"images": [digit], "y": 3, "seed": 0}),
            (f"{v} encode every class", "POST", "/v1/encode", pin, {"images": [digit, BLOCK], "seed": 2}),
            (f"{v} interpolations", "POST", "/v1/interpolations", pin,
             {"z_from": [-1.0] * 32, "z_to": [1.0] * 32, "steps": 3, "y": 4, "seed": 6}),
        ]  # fmt: skip
        for graph in ("encoder", "decoder", "scorer"):
            found += [
                (f"{v} v2 {graph}", "GET", f"/v2/models/{graph}/versions/{v}", {}, None),
                (f"{v} v2 {graph} ready", "GET", f"/v2/models/{graph}/versions/{v}/ready", {}, None),
            ]
        x = np.asarray(BLOCK, dtype=np.float32).ravel().tolist()
        infer = {
            "decoder": [("z", [2, 32], [0.0] * 32 + [0.5] * 32), ("y", [2, 10], _one_hot(3) + _one_hot(8))],
            "encoder": [("x", [1, 784], x), ("y", [1, 10], _one_hot(3))],
            "scorer": [("x", [2, 784], x + BLANK), ("y", [2, 10], _one_hot(3) + _one_hot(0)), ("eps", [3, 2, 32], eps)],
        }
        for graph, inputs in infer.items():
            body = {"inputs": [{"name": n, "shape": s, "datatype": "FP32", "data": d} for n, s, d in inputs]}
            found.append((f"{v} v2 {graph} infer", "POST", f"/v2/models/{graph}/versions/{v}/infer", {}, body))
    return [dict(zip(("name", "method", "path", "query", "body"), case)) for case in found]


def answer(client, case: dict) -> dict:
    """The status and the answer of one golden request, JSON or a PNG's pixels, the volatile fields by type."""
    response = client.request(case["method"], case["path"], params=case["query"], json=case["body"])
    if response.headers.get("content-type", "").startswith("image/png"):
        from PIL import Image

        pixels = np.asarray(Image.open(io.BytesIO(response.content)).convert("L"))
        body = {"png": {"shape": list(pixels.shape), "pixels": pixels.ravel().tolist()}}
    else:
        body = response.json()
    return {"status": response.status_code, "model_version": response.headers.get("x-model-version"),
            "body": _mask(body)}  # fmt: skip


def _mask(value):
    if isinstance(value, dict):
        return {k: (f"<{type(v).__name__}>" if k in VOLATILE else _mask(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return value


def serve():
    """A test client of the shipped repository, both versions ready, nothing polled."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import SHIPPED_REPOSITORY, Settings

    return TestClient(create_app(Settings(model_repository=SHIPPED_REPOSITORY, repository_poll_s=0)))


def record() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from servers import wait_ready

    with serve() as client:
        wait_ready(client)
        answers = {case["name"]: answer(client, case) for case in cases()}
    ANSWERS.write_text(json.dumps(answers, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(answers)} answers to {ANSWERS.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    record()
