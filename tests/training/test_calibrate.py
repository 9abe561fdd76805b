"""`cvae calibrate` on a tiny model: the reference comes from the validation split, and the service loads it."""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from synthetic import synthetic_mnist  # noqa: E402

from service.engine import adaptive, background, ood  # noqa: E402
from service.engine.runtime import load_model, read_manifest  # noqa: E402
from service.engine.scoring import Scorer  # noqa: E402
from service.schemas.options import ClassifyOptions  # noqa: E402
from service.settings import Settings  # noqa: E402
from training import abstention_curve  # noqa: E402
from training.calibrate import BACKGROUND_DRAWS, CRITIC_WEIGHT, calibrate  # noqa: E402
from training.critic import CriticConfig  # noqa: E402
from training.export import export  # noqa: E402
from training.model import ModelConfig  # noqa: E402
from training.train import TrainConfig, binarize, split_train_val, train  # noqa: E402

# a service's variables in the shell: were calibrate to read them, it would refuse (7 decoder passes at most),
# or score at K = 3 and flag at another rate
SERVICE_ENVIRONMENT = {"CVAE_MAX_WORK": "7", "CVAE_DEFAULT_NUM_SAMPLES": "3", "CVAE_OOD_FPR": "0.5"}


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    data = synthetic_mnist()
    config = TrainConfig(epochs=2, batch_size=50, num_samples=2, val_size=40, seed=3)
    checkpoint = train(ModelConfig(latent_dim=4, hidden_dims=(32, 32)), config, data)
    out = export(checkpoint, tmp_path_factory.mktemp("model"))
    with pytest.MonkeyPatch.context() as patch:
        for name, value in SERVICE_ENVIRONMENT.items():
            patch.setenv(name, value)
        entry = calibrate(out, data, critic=TINY_CRITIC)
    return data, config, out, entry


TINY_CRITIC = CriticConfig(epochs=1, num_outliers=64, batch_size=32)


def test_the_reference_is_the_validation_split_scored_by_the_service(calibrated):
    """At the service's declared defaults, whatever CVAE_* variables the shell held: the reference's log p(x) is
    Scorer.score_now's on the same images and seed."""
    data, config, out, entry = calibrated
    assert not set(SERVICE_ENVIRONMENT) & set(os.environ)
    train_idx, val_idx = split_train_val(data, config)
    assert entry["reference"]["split"] == "validation" and entry["reference"]["num_images"] == len(val_idx) == 40
    scored_with = adaptive.screening_for(read_manifest(out))  # what the service scored the reference with
    assert entry["reference"]["screening"] == scored_with.record()
    assert entry["background"]["binary_images_counted"] == BACKGROUND_DRAWS * len(train_idx)
    x = binarize(torch.from_numpy(data.train_x[val_idx]), torch.Generator().manual_seed(0)).numpy()
    scores = Scorer.open(out).score_now(x, ClassifyOptions(seed=0))
    assert entry["reference"]["settings"].startswith("the service's settings (K = 1000, ")
    log_px = scores.bayes.log_px
    with np.load(out / "ood.npz") as stored:
        assert stored["reference"].shape == (40, len(ood.FEATURES))
        np.testing.assert_allclose(stored["reference"][:, ood.FEATURES.index("log_px")], log_px, rtol=0, atol=1e-9)
        calibration = ood.Calibration.load(out / "ood.npz", critic_weight=CRITIC_WEIGHT)
        verdicts = ood.assess(stored["reference"], ood.ink_pixels(x), calibration, 0.01)
        flagged = verdicts.flagged
    assert read_manifest(out)["files"]["ood"] == entry and entry["critic_weight"] == CRITIC_WEIGHT
    # the abstention curve counts every reason, the critic's among them, on these validation digits
    probs = scores.probs
    critic_probs = load_model(Settings(model_dir=out)).critic_answers(x)[1]
    thresholds = tuple(row["min_probability"] for row in entry["abstention"]["curve"])
    labels = data.train_y[val_idx]
    assert entry["abstention"]["curve"] == abstention_curve.curve(probs, critic_probs, labels, flagged, thresholds)
    assert entry["abstention"]["curve_without_vote"] == abstention_curve.curve(probs, None, labels, flagged, thresholds)
    within = [row["min_probability"] for row in entry["abstention"]["curve"] if row["abstained"] <= 0.02]
    assert entry["abstention"]["default_min_probability"] == max(within, default=0.0)
    critic = read_manifest(out)["files"]["ood_critic"]
    assert critic["training"]["split"] == {"seed": 3, "val_size": 40}
    assert critic["training"]["digits"] == f"the first {len(train_idx)} of the training split"


def test_the_card_gives_both_abstention_curves(calibrated):
    from training.card_sections import ood_section

    _, _, out, entry = calibrated
    manifest = read_manifest(out)
    section = ood_section(manifest)
    rows = [line for line in section.splitlines() if line.startswith("| 0")]
    assert len(rows) == len(abstention_curve.THRESHOLDS) and "critic_vote" in section
    for line, voted, unvoted in zip(rows, entry["abstention"]["curve"], entry["abstention"]["curve_without_vote"]):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[1] == f"{100 * voted['abstained']:.2f} %" and cells[3] == f"{100 * unvoted['abstained']:.2f} %"
    del manifest["files"]["ood"]["abstention"]["curve_without_vote"]  # a calibration made before it was recorded
    older = ood_section(manifest)
    assert "critic_vote" not in older and "| min_probability | abstained | accuracy kept |\n|---|---|---|\n" in older


def test_the_service_loads_the_calibration_and_checks_it(calibrated):
    _, _, out, entry = calibrated
    model = load_model(Settings(model_dir=out))
    assert model.ood is not None and len(model.ood.reference) == 40
    # the first 20 give the centre, covariance and ranks, the other 20 the statistics counted against
    assert len(model.ood.first_distance) == len(model.ood.first_critic) == 20
    assert len(model.ood.reference_statistic) == 20
    assert list(model.ood.reference_statistic) == sorted(model.ood.reference_statistic)
    x = (np.random.default_rng(0).random((3, 784)) < 0.2).astype(np.float32)
    with np.load(out / "ood.npz") as stored:
        critic = stored["reference"][:, ood.CRITIC]
    log_odds, digit_probs = model.critic_answers(x)
    assert log_odds.shape == (3,) and np.isfinite(log_odds).all() and np.isfinite(critic).all()
    assert digit_probs.shape == (3, 10)
    np.testing.assert_allclose(digit_probs.sum(axis=1), 1.0, rtol=1e-5)
    assert entry["template"] == [list(t) for t in background.TEMPLATE] and entry["features"] == list(ood.FEATURES)


def test_conformal_p_values_count_the_reference():
    values = np.array([-1.0, 0.0, 49.5, 1e9])
    np.testing.assert_allclose(ood._conformal(np.arange(99.0), values), [0.01, 0.02, 0.51, 1.0])


def _skewed(rng, n):
    """Correlated, skewed numbers, nothing like a Gaussian: what the distance must cope with."""
    base = rng.exponential(size=(n, len(ood.FEATURES)))
    return base @ np.triu(np.ones((len(ood.FEATURES), len(ood.FEATURES))))


def _p_values(calibration, values):
    ink = np.full(len(values), 100)
    return ood.assess(values, ink, calibration, 0.01).p_value


def test_the_p_value_combines_distance_and_critic_ranked_in_the_first_half_counted_in_the_second():
    rng = np.random.default_rng(0)
    reference = _skewed(rng, 2000)
    calibration = ood.Calibration.fit(np.zeros((2, background.NUM_CONTEXTS)), reference)
    first, second = reference[:1000], reference[1000:]
    six = len(ood.DISTANCE_FEATURES)
    covariance = np.cov(first[:, :six], rowvar=False)

    def distance(values):
        offset = values[:, :six] - first[:, :six].mean(axis=0)
        return np.sqrt(np.einsum("ij,ij->i", offset, np.linalg.solve(covariance, offset.T).T))

    def share(reference, v):  # at or above v, counting v; past the largest an exponential tail
        top = np.sort(reference)[-11:]  # the top 1 % of 1,000 is 10, over the 11th largest
        if v > top[-1]:
            return np.exp(-(v - top[-1]) / np.mean(top[1:] - top[0])) / 1001
        return (1 + np.sum(reference >= v)) / 1001

    def statistic(values):
        p_d = np.array([share(distance(first), d) for d in distance(values)])
        p_c = np.array([share(-first[:, ood.CRITIC], -c) for c in values[:, ood.CRITIC]])
        with np.errstate(divide="ignore"):  # a share of 0 (far past the tail): an infinite statistic
            return -np.log(p_d) - np.log(p_c)

    np.testing.assert_allclose(calibration.reference_statistic, np.sort(statistic(second)), rtol=1e-9)
    typical = np.median(first, axis=0)
    queries = np.stack([typical, typical + 1e6, *_skewed(rng, 5)])
    queries[1, ood.CRITIC] = -1e6  # far in the distance and the critic both
    counted = [(1 + np.sum(statistic(second) >= t)) / 1001 for t in statistic(queries)]
    np.testing.assert_allclose(_p_values(calibration, queries), counted)
    np.testing.assert_allclose(calibration.distance(queries), distance(queries), rtol=1e-9)
    assert counted[0] > 0.5 and counted[1] == 1 / 1001


@pytest.mark.parametrize("weight", [ood.EQUAL_WEIGHT, 0.0, 0.85, 1.0])
def test_the_false_positive_rate_holds_for_numbers_of_any_law(weight):
    """Split conformal: fresh draws of the reference's law are flagged at most at the rate asked for,
    whatever the critic's weight."""
    rng = np.random.default_rng(1)
    calibration = ood.Calibration.fit(np.zeros((2, background.NUM_CONTEXTS)), _skewed(rng, 4000), critic_weight=weight)
    p = _p_values(calibration, _skewed(rng, 20000))
    for alpha in (0.01, 0.05, 0.2):
        # alpha, give or take the randomness of the 2,000 reference distances and of the 20,000 draws: 3 sd
        assert np.mean(p <= alpha) <= alpha + 3 * np.sqrt(alpha * (1 - alpha) * (1 / 2000 + 1 / 20000))


def test_the_critic_s_weight_moves_the_statistic_from_the_distance_s_evidence_to_the_critic_s():
    rng = np.random.default_rng(3)
    reference = _skewed(rng, 2000)
    texture = np.zeros((2, background.NUM_CONTEXTS))
    weighed = {w: ood.Calibration.fit(texture, reference, critic_weight=w) for w in (0.0, 0.3, 0.5, 1.0)}
    queries = _skewed(rng, 50)
    distance, critic = weighed[0.5].distance(queries), queries[:, ood.CRITIC]
    statistic = {w: calibration.statistic(distance, critic) for w, calibration in weighed.items()}
    for w in (0.3, 0.5):  # a straight line between the distance's evidence alone and the critic's alone
        np.testing.assert_allclose(statistic[w], (1 - w) * statistic[0.0] + w * statistic[1.0], rtol=1e-12)
    # alone, each ranks the images as its own number does (ranks against the first half: ties allowed),
    # the distance up, the critic down
    assert np.all(np.diff(statistic[0.0][np.argsort(distance)]) >= 0)
    assert np.all(np.diff(statistic[1.0][np.argsort(-critic)]) >= 0)
    assert len(np.unique(statistic[0.0])) > 40 and len(np.unique(statistic[1.0])) > 40
    # a weight of 0 ignores the critic even far off the scale, a weight of 1 the distance even where it is infinite
    typical = np.median(reference, axis=0)
    unlike, missing = typical.copy(), typical.copy()
    unlike[ood.CRITIC] -= 1e6
    missing[1] = np.nan
    assert _p_values(weighed[0.0], np.stack([unlike]))[0] > 0.3
    assert _p_values(weighed[1.0], np.stack([missing]))[0] > 0.3
    assert _p_values(weighed[0.3], np.stack([unlike, missing])).tolist() == [1 / 1001] * 2
    for wrong in (-0.1, 1.5, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match=r"critic's weight must be a number in \[0, 1\] \(got "):
            ood.Calibration.fit(np.zeros((2, background.NUM_CONTEXTS)), reference, critic_weight=wrong)
    assert type(ood.critic_weight_of(np.float32(0.25))) is float and ood.critic_weight_of(1) == 1.0


def test_one_number_far_off_is_enough_and_a_missing_one_is_as_far_as_it_gets():
    rng = np.random.default_rng(2)
    calibration = ood.Calibration.fit(np.zeros((2, background.NUM_CONTEXTS)), _skewed(rng, 2000))
    typical = np.median(calibration.reference, axis=0)
    far, missing, unlike = typical.copy(), typical.copy(), typical.copy()
    far[0] -= 50 * calibration.reference[:, 0].std()  # a likelihood ratio off the scale, the rest typical
    missing[1] = np.nan
    unlike[ood.CRITIC] -= 50 * calibration.reference[:, ood.CRITIC].std()  # only the critic finds it unusual
    p = _p_values(calibration, np.stack([typical, far, missing, unlike]))
    assert p[0] > 0.5 and p[1] == p[2] == p[3] == 1 / 1001


def test_beyond_the_first_half_the_share_falls_with_an_exponential_tail():
    reference = np.arange(1.0, 201.0)  # 200 values; the top 2 exceed the value below them by 1 and 2: scale 1.5
    inside = np.array([0.0, 100.0, 200.0])
    np.testing.assert_allclose(ood._tail_share(reference, inside), ood._conformal_above(reference, inside))
    beyond = ood._tail_share(reference, np.array([200.5, 203.0, 1e6]))
    np.testing.assert_allclose(beyond, np.exp(-np.array([0.5, 3.0, 1e6 - 200]) / 1.5) / 201)


def test_the_ink_test_is_two_sided():
    reference = np.arange(99.0)
    np.testing.assert_allclose(ood._conformal_two_sided(reference, np.array([-1.0, 49.0, 200.0])), [0.02, 1.0, 0.02])


def test_too_few_validation_images_or_a_weight_off_the_scale_are_refused_and_the_calibration_kept(calibrated):
    data, _, out, entry = calibrated
    with pytest.raises(ValueError, match="raise --limit"):
        calibrate(out, data, limit=3, critic=TINY_CRITIC)
    with pytest.raises(ValueError, match=r"critic's weight must be a number in \[0, 1\] \(got 1.5\)"):
        calibrate(out, data, critic=TINY_CRITIC, critic_weight=1.5)
    assert read_manifest(out)["files"]["ood"] == entry


def test_a_critic_is_reused_only_from_a_model_trained_on_the_same_split(calibrated, tmp_path):
    data, config, out, entry = calibrated
    checkpoint = train(
        ModelConfig(latent_dim=4, hidden_dims=(32, 32)), TrainConfig(**{**vars(config), "seed": 4}), data
    )
    other = export(checkpoint, tmp_path / "other")
    with pytest.raises(ValueError, match="train one here"):  # other split: out's training digits are other's
        calibrate(other, data, critic_from=out)  # validation digits, or the reverse
    with pytest.raises(ValueError, match="no critic to reuse"):
        calibrate(out, data, critic_from=other)
    assert read_manifest(out)["files"]["ood"] == entry  # a refused calibration keeps the one there was
    same = export(train(ModelConfig(latent_dim=4, hidden_dims=(32, 32)), config, data), tmp_path / "same")
    calibrate(same, data, critic_from=out)
    assert (same / "ood_critic.onnx").read_bytes() == (out / "ood_critic.onnx").read_bytes()
    assert read_manifest(same)["files"]["ood_critic"] == read_manifest(out)["files"]["ood_critic"]


def test_calibrating_again_replaces_the_calibration_with_the_same_one(calibrated):
    data, _, out, entry = calibrated
    with np.load(out / "ood.npz") as before:
        reference = before["reference"].copy()
    again = calibrate(out, data, critic=TINY_CRITIC)
    with np.load(out / "ood.npz") as after:
        np.testing.assert_array_equal(after["reference"], reference)
    assert {k: v for k, v in again.items() if k not in ("seconds", "sha256")} == {
        k: v for k, v in entry.items() if k not in ("seconds", "sha256")
    }


def test_a_critic_fine_tuned_on_handwriting_names_its_sources_and_its_start(calibrated, tmp_path, monkeypatch):
    """`cvae calibrate --outliers-dir DIR --critic-start MODEL_DIR` on a copy of the tiny model: the critic
    learns from the handwriting's training part, starts from the copy's own critic, and the card names each
    source with its licence."""
    import shutil

    from handwriting_files import handwriting_folder

    from training.card_sections import ood_section
    from training.handwriting import SOURCES, for_training

    data, _, out, _ = calibrated
    model = shutil.copytree(out, tmp_path / "model")
    before = read_manifest(model)["files"]["ood_critic"]["sha256"]
    folder = handwriting_folder(tmp_path / "outliers", monkeypatch)
    calibrate(model, data, critic=TINY_CRITIC, outliers_dir=folder, critic_start=model)
    manifest = read_manifest(model)
    training = manifest["files"]["ood_critic"]["training"]
    assert training["started_from"] == {"model_dir": str(model), "sha256": before}
    learned = for_training(folder)
    assert training["handwriting"] == {"images": len(learned.x), "sources": "kannada-test, quickdraw", "share": 0.5}
    section = ood_section(manifest)
    for name in ("kannada-test", "quickdraw"):
        assert f"{name} ({SOURCES[name].licence})" in section
    assert "fine-tuned from the critic of" in section
    with pytest.raises(ValueError, match="give one or the other"):
        calibrate(model, data, critic=TINY_CRITIC, critic_from=out, outliers_dir=folder)
