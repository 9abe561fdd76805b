"""The out-of-distribution assessment and abstention, on the shipped model and its calibration."""

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from service.engine import background, ood
from service.engine.runtime import load_model
from service.failures import ModelLoadError
from service.settings import Settings


def _test_digits(mnist_dir: Path, n: int) -> np.ndarray:
    raw = gzip.decompress((mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes())
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 784)[:n].astype(float)


def _classify(client, images, **fields):
    body = {"images": images, "num_samples": 200, "seed": 0, "include": ["ood", "critic", "settings"], **fields}
    response = client.post("/v1/classify", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_shipped_calibration_comes_from_validation_digits(shipped_model):
    model = load_model(Settings(model_dir=shipped_model))
    entry = model.manifest["files"]["ood"]
    assert entry["reference"]["split"] == "validation"
    assert entry["background"]["split"] == "training"
    calibration = model.ood
    assert calibration.critic_weight == entry["critic_weight"] == 0.85  # what the README and the schema say
    assert len(calibration.reference) == entry["reference"]["num_images"] >= 1000
    assert entry["features"] == list(ood.FEATURES)
    second = calibration.reference[len(calibration.reference) // 2 :]
    assert 2.1 <= np.median(calibration.distance(second)) <= 2.3  # what the README and the schema say
    # the critic is sure of validation digits: median log-odds 6.70 (6.20 before it learned from handwriting)
    assert 6.2 <= np.median(calibration.reference[:, ood.CRITIC]) <= 7.2
    critic = load_model(Settings(model_dir=shipped_model)).manifest["files"]["ood_critic"]
    assert critic["training"]["split"] == {"seed": 0, "val_size": 5000}  # its digits are none of the reference
    # the half the p-values are counted against is flagged at the default rate or less, by construction
    verdicts = ood.assess(second, np.full(len(second), 100), calibration, entry["default_fpr"])
    assert np.mean(verdicts.flagged) <= entry["default_fpr"]
    # all validation digits: about 1 %, within the 1.5 % that fresh digits may be flagged at
    assert 0.005 <= entry["validation_flagged_at_default"] <= 0.015


def test_the_reference_is_the_validation_split_rescored(shipped_model, mnist_dir, tmp_path):
    """Calibrating a copy on the first validation images reproduces the shipped reference's first values."""
    from training.calibrate import calibrate
    from training.data import load_mnist

    copy = tmp_path / "model"
    shutil.copytree(shipped_model, copy, ignore=shutil.ignore_patterns("checkpoint.pt", "*.png", "ais.json"))
    calibrate(copy, load_mnist(mnist_dir), limit=8, critic_from=shipped_model)
    with np.load(shipped_model / "ood.npz") as shipped, np.load(copy / "ood.npz") as again:
        # float32 graphs: the critic's log-odds (about 10) move by a few units in the last place between
        # ONNX Runtime builds, 3e-7 of their size on this one; nothing else moves
        np.testing.assert_allclose(again["reference"], shipped["reference"][:8], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(again["log_probs"], shipped["log_probs"])


def test_junk_is_flagged_and_digits_are_not(client, mnist_dir):
    digits = _test_digits(mnist_dir, 4)
    noise = (np.random.default_rng(0).random(784) < 0.3).astype(float) * 255
    junk = {"blank": np.zeros(784), "noise": noise, "inverted": 255 - digits[0]}
    answer = _classify(client, [row.tolist() for row in [*junk.values(), *digits]], pixel_scale="byte")
    verdicts = [r["out_of_distribution"] for r in answer["results"]]
    assert answer["settings"]["ood_fpr"] == 0.01
    for name, verdict in zip(junk, verdicts):
        assert verdict["flagged"], name
        assert verdict["p_value"] <= 0.01
    for verdict, result in zip(verdicts[len(junk) :], answer["results"][len(junk) :]):
        assert not verdict["flagged"]
        assert verdict["score"] > 0  # the digit model explains a digit better than local texture does
        assert "out_of_distribution" not in result["abstain_reasons"]
    blank = answer["results"][0]
    assert blank["abstained"] and "out_of_distribution" in blank["abstain_reasons"]
    assert sum(blank["probs"]) == pytest.approx(1.0)  # p(y|x) is still there for who wants it


def test_a_blank_page_is_flagged_although_its_likelihood_is_high(client, mnist_dir):
    digit, blank = _test_digits(mnist_dir, 1)[0], np.zeros(784)
    answer = client.post(
        "/v1/log-likelihood", json={"images": [blank.tolist(), digit.tolist()], "pixel_scale": "byte"}
    ).json()
    blank_result, digit_result = answer["results"]
    assert blank_result["log_px"] > digit_result["log_px"]
    assert blank_result["out_of_distribution"]["flagged"]
    assert not digit_result["out_of_distribution"]["flagged"]


def test_abstention_and_the_flag_follow_the_callers_thresholds(client, mnist_dir):
    digits = _test_digits(mnist_dir, 16)
    answers = _classify(client, [d.tolist() for d in digits], pixel_scale="byte", min_probability=0)["results"]
    least = min(range(len(digits)), key=lambda i: answers[i]["probability"])  # the least certain digit
    digit = digits[least].tolist()
    first = _classify(client, [digit], pixel_scale="byte", min_probability=0)["results"][0]
    probability, p_value = first["probability"], first["out_of_distribution"]["p_value"]
    assert probability < 1.0 and not first["abstained"]

    above = _classify(client, [digit], pixel_scale="byte", min_probability=probability + 1e-12)
    assert above["settings"]["min_probability"] == probability + 1e-12
    assert "low_probability" in above["results"][0]["abstain_reasons"]
    below = _classify(client, [digit], pixel_scale="byte", min_probability=probability - 1e-6)["results"][0]
    assert not below["abstained"]

    strict = _classify(client, [digit], pixel_scale="byte", ood_fpr=min(0.999, p_value * 1.0001))["results"][0]
    assert strict["out_of_distribution"]["flagged"] and "out_of_distribution" in strict["abstain_reasons"]
    lenient = _classify(client, [digit], pixel_scale="byte", ood_fpr=p_value * 0.999)["results"][0]
    assert not lenient["out_of_distribution"]["flagged"]


def test_the_critics_disagreement_follows_the_callers_threshold(client, mnist_dir):
    digits = _test_digits(mnist_dir, 16)
    answers = _classify(client, [d.tolist() for d in digits], pixel_scale="byte", min_probability=0)["results"]
    for answer in answers:
        assert len(answer["critic_probs"]) == 10 and sum(answer["critic_probs"]) == pytest.approx(1.0, abs=1e-5)
    bayes = np.array([a["probability"] for a in answers])
    critic = np.array([a["critic_probs"][a["predicted"]] for a in answers])
    i = int(np.argmax(np.abs(bayes - critic)))  # where the two models' confidence differs most
    assert not answers[i]["abstained"] and abs(bayes[i] - critic[i]) > 1e-6
    threshold = (bayes[i] + critic[i]) / 2  # the same images again: the same noise, the same answers
    between = _classify(client, [d.tolist() for d in digits], pixel_scale="byte", min_probability=threshold)
    less_sure = "critic_disagrees" if critic[i] < bayes[i] else "low_probability"
    assert between["results"][i]["abstain_reasons"] == [less_sure]
    assert between["results"][i]["critic_probs"] == answers[i]["critic_probs"]


def test_without_the_critics_vote_only_bayes_rule_and_the_flag_abstain(client, mnist_dir):
    digits = [d.tolist() for d in _test_digits(mnist_dir, 16)]
    answers = _classify(client, digits, pixel_scale="byte", min_probability=0)["results"]
    critic = np.array([a["critic_probs"][a["predicted"]] for a in answers])
    bayes = np.array([a["probability"] for a in answers])
    i = int(np.argmin(critic - bayes))  # where the critic doubts Bayes' rule's class most
    assert critic[i] < bayes[i]
    threshold = (bayes[i] + critic[i]) / 2
    voted = _classify(client, digits, pixel_scale="byte", min_probability=threshold)
    unvoted = _classify(client, digits, pixel_scale="byte", min_probability=threshold, critic_vote=False)
    assert voted["settings"]["critic_vote"] is True and unvoted["settings"]["critic_vote"] is False
    assert "critic_disagrees" in voted["results"][i]["abstain_reasons"]
    for with_vote, without in zip(voted["results"], unvoted["results"]):
        assert without["abstain_reasons"] == [r for r in with_vote["abstain_reasons"] if r != "critic_disagrees"]
        assert without["critic_probs"] == with_vote["critic_probs"] and without["probs"] == with_vote["probs"]


def test_bad_thresholds_name_the_field(client):
    for field, value in (("ood_fpr", 0), ("ood_fpr", 1.5), ("min_probability", 2), ("critic_vote", "maybe")):
        response = client.post("/v1/classify", json={"images": [[0.0] * 784], field: value})
        assert response.status_code == 422
        assert field in response.text


def test_the_model_endpoint_gives_the_defaults(client):
    described = client.get("/v1/model", params={"include": "manifest"}).json()
    limits = described["limits"]
    assert limits["ood_fpr"] == 0.01
    expected = described["manifest"]["files"]["ood"]["abstention"]["default_min_probability"]
    assert limits["min_probability"] == expected


def test_a_model_without_calibration_answers_without_a_verdict(shipped_model, tmp_path):
    import json

    from fastapi.testclient import TestClient
    from servers import wait_ready

    from service.app import create_app

    copy = tmp_path / "model"
    shutil.copytree(shipped_model, copy, ignore=shutil.ignore_patterns("checkpoint.pt", "*.png", "ood.npz"))
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["files"]["ood"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with TestClient(create_app(Settings(model_dir=copy, max_work=400_000))) as client:
        wait_ready(client)
        answer = _classify(client, [[0.0] * 784])
    assert answer["settings"]["ood_fpr"] is None and answer["settings"]["min_probability"] == 0.0
    assert answer["results"][0]["out_of_distribution"] is None
    assert answer["settings"]["critic_vote"] is False and answer["results"][0]["critic_probs"] is None  # nothing voted


def test_a_corrupt_calibration_stops_the_model_from_loading(shipped_model, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(shipped_model, copy, ignore=shutil.ignore_patterns("checkpoint.pt", "*.png"))
    (copy / "ood.npz").write_bytes(b"not what the manifest lists")
    with pytest.raises(ModelLoadError, match="sha256"):
        load_model(Settings(model_dir=copy))


@pytest.mark.parametrize("weight", [1.5, -0.2, "high", True])
def test_a_critic_weight_off_the_scale_stops_the_model_from_loading(shipped_model, tmp_path, weight):
    import json

    copy = tmp_path / "model"
    shutil.copytree(shipped_model, copy, ignore=shutil.ignore_patterns("checkpoint.pt", "*.png"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["ood"]["critic_weight"] = weight
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match=r"files.ood.critic_weight = .* a number in \[0, 1\]"):
        load_model(Settings(model_dir=copy))


def test_a_calibration_that_names_no_weight_asks_for_a_new_one(shipped_model, tmp_path):
    import json

    copy = tmp_path / "model"
    shutil.copytree(shipped_model, copy, ignore=shutil.ignore_patterns("checkpoint.pt", "*.png"))
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["files"]["ood"]["critic_weight"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match=r"no files.ood.critic_weight.*cvae calibrate"):
        load_model(Settings(model_dir=copy))


def test_a_calibration_without_its_critic_asks_for_a_new_one(shipped_model, tmp_path):
    import json

    copy = tmp_path / "model"
    shutil.copytree(shipped_model, copy, ignore=shutil.ignore_patterns("checkpoint.pt", "*.png"))
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["files"]["ood_critic"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="critic graph .*cvae calibrate"):
        load_model(Settings(model_dir=copy))


def test_the_critic_tells_printed_letters_it_never_saw_from_digits(shipped_model, mnist_dir):
    """Letters in the benchmark's typefaces, which the critic was not trained on, get lower log-odds
    than test digits (the benchmark measures this on 300 letters and 10,000 digits)."""
    from bench.ood_sets import FONT_FAMILIES, fonts, letters

    family = FONT_FAMILIES["held_out"]
    if not fonts(family):
        pytest.skip(f"no {family} fonts on this machine")
    model = load_model(Settings(model_dir=shipped_model))
    digits = model.critic_answers((_test_digits(mnist_dir, 200) > 127).astype(np.float32))[0]
    printed = model.critic_answers((letters(100, 0, family) > 0.5).astype(np.float32))[0]
    assert ood.auroc(-digits, -printed) >= 0.9


def test_a_calibration_of_other_numbers_asks_for_a_new_one(shipped_model, tmp_path):
    import json

    copy = tmp_path / "model"
    shutil.copytree(shipped_model, copy, ignore=shutil.ignore_patterns("checkpoint.pt", "*.png"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["ood"]["features"] = ["score", "log_px", "ink"]  # what an older calibration measured
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="cvae calibrate"):
        load_model(Settings(model_dir=copy))


def test_the_background_model_reads_only_pixels_above_and_to_the_left():
    rng = np.random.default_rng(0)
    x = (rng.random((1, 784)) < 0.3).astype(float)
    changed = x.copy()
    changed[0, 28 * 20 + 10] = 1 - changed[0, 28 * 20 + 10]  # row 20, column 10
    before, after = background.contexts(x, (28, 28)), background.contexts(changed, (28, 28))
    differs = np.nonzero(before[0] != after[0])[0]
    # only pixels after (20, 10) in raster order, within two rows below and two columns either side
    assert len(differs) and all(
        (r, c) > (20, 10) and r - 20 <= 2 and abs(c - 10) <= 2 for r, c in (divmod(int(i), 28) for i in differs)
    )


def _critic_without_digit_probabilities(shipped_model, tmp_path) -> Path:
    """A copy of the shipped model whose critic graph gives its log-odds alone."""
    import hashlib
    import json

    import onnx

    copy = tmp_path / "model"
    shutil.copytree(shipped_model, copy, ignore=shutil.ignore_patterns("checkpoint.pt", "*.png"))
    graph = onnx.load(str(copy / "ood_critic.onnx"))
    kept = [output for output in graph.graph.output if output.name == "critic"]
    del graph.graph.output[:]
    graph.graph.output.extend(kept)
    onnx.save(graph, str(copy / "ood_critic.onnx"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["ood_critic"]["sha256"] = hashlib.sha256((copy / "ood_critic.onnx").read_bytes()).hexdigest()
    del manifest["files"]["ood_critic"]["outputs"]["digit_log_probs"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_a_critic_graph_without_digit_probabilities_is_refused_naming_the_fix(shipped_model, tmp_path):
    copy = _critic_without_digit_probabilities(shipped_model, tmp_path)
    with pytest.raises(ModelLoadError, match="digit_log_probs.*cvae calibrate .* --critic-from"):
        load_model(Settings(model_dir=copy))


def test_the_fix_writes_the_critic_anew_with_both_outputs(shipped_model, tmp_path, mnist_dir):
    from training.calibrate import calibrate
    from training.data import load_mnist

    copy = _critic_without_digit_probabilities(shipped_model, tmp_path)
    calibrate(copy, load_mnist(mnist_dir), limit=8, critic_from=copy)
    x = (np.random.default_rng(0).random((2, 784)) < 0.2).astype(np.float32)
    log_odds, digits = load_model(Settings(model_dir=copy)).critic_answers(x)
    np.testing.assert_allclose(log_odds, load_model(Settings(model_dir=shipped_model)).critic_answers(x)[0], rtol=1e-6)
    np.testing.assert_allclose(digits.sum(axis=1), 1.0, rtol=1e-5)
