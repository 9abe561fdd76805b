"""The golden answers: the service answers a fixed set of requests (every /v1 and /v2 endpoint, both
shipped versions, fixed seeds) as recorded in tests/golden/answers.json, which `python
tests/golden/cases.py` rewrites. Statuses, classes, flags, strings, keys and shapes must match exactly;
floats within 1e-5 relative; a PNG's pixels within one grey level."""

import json
import math

import pytest
from golden.cases import ANSWERS, answer, cases, serve
from servers import wait_ready

RELATIVE = 1e-5
TINY = 1e-12  # below this, floats are equal (float32 noise far under any figure an answer reports)


def differences(got, want, path: str = "") -> list[str]:
    """Where `got` departs from `want`, one line each."""
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return [f"{path}: keys {sorted(got) if isinstance(got, dict) else type(got).__name__} != {sorted(want)}"]
        return [line for key in want for line in differences(got[key], want[key], f"{path}.{key}")]
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [f"{path}: length {len(got) if isinstance(got, list) else type(got).__name__} != {len(want)}"]
        return [line for i, (g, w) in enumerate(zip(got, want)) for line in differences(g, w, f"{path}[{i}]")]
    if isinstance(want, float) and isinstance(got, int | float) and not isinstance(got, bool):
        close = math.isclose(got, want, rel_tol=RELATIVE, abs_tol=TINY)
        return [] if close else [f"{path}: {got!r} != {want!r}"]
    if type(got) is not type(want) or got != want:
        return [f"{path}: {got!r} != {want!r}"]
    return []


@pytest.fixture(scope="module")
def client():
    with serve() as client:
        wait_ready(client)
        yield client


RECORDED = json.loads(ANSWERS.read_text())


def test_every_case_is_recorded():
    assert [case["name"] for case in cases()] == sorted(RECORDED, key=[c["name"] for c in cases()].index)
    assert set(RECORDED) == {case["name"] for case in cases()}, "run python tests/golden/cases.py"


@pytest.mark.parametrize("case", cases(), ids=lambda case: case["name"])
def test_the_answer_is_the_golden_one(client, case):
    got, want = answer(client, case), RECORDED[case["name"]]
    if "png" in want["body"]:  # grey levels rounded from float32 means: one level either way
        pixels = zip(got["body"]["png"]["pixels"], want["body"]["png"]["pixels"], strict=True)
        assert all(abs(g - w) <= 1 for g, w in pixels)
        got["body"]["png"]["pixels"] = want["body"]["png"]["pixels"]
    found = differences(got, want)
    assert not found, f"{len(found)} differences, the first: " + "; ".join(found[:10])


def test_a_changed_answer_is_found():
    want = {"results": [{"predicted": 3, "log_px": -56.962739, "flags": [True], "probs": [1e-34, 1.0]}]}
    assert differences(json.loads(json.dumps(want)), want) == []
    assert differences({"results": [{**want["results"][0], "predicted": 5}]}, want) == [".results[0].predicted: 5 != 3"]
    assert differences({"results": [{**want["results"][0], "log_px": -56.9640}]}, want)  # 2.3e-5 relative: over 1e-5
    assert not differences({"results": [{**want["results"][0], "log_px": -56.9630}]}, want)  # 4.6e-6: within
    assert differences({"results": [{**want["results"][0], "flags": [1]}]}, want)  # True is not 1
    assert differences({"results": [{**want["results"][0], "extra": 0}]}, want)  # a new key
    assert differences({"results": []}, want)  # a shape
