"""The detection benchmark and the sets it builds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from handwriting_files import handwriting_folder

from bench import ood_sets
from bench.common import mnist_digits
from bench.ood import features, handwriting, main, markdown
from service.engine import ood
from service.engine.scoring import Scorer
from service.schemas.options import ClassifyOptions


def test_auroc_is_the_mann_whitney_statistic():
    inliers = np.array([0.0, 1.0, 2.0, 3.0])
    assert ood.auroc(inliers, np.array([10.0, 11.0])) == 1.0
    assert ood.auroc(inliers, np.array([-5.0])) == 0.0
    assert ood.auroc(inliers, np.array([1.0])) == pytest.approx((1 + 0.5) / 4)  # one below, one tie
    rng = np.random.default_rng(0)
    same = rng.standard_normal(4000)
    assert ood.auroc(same[:2000], same[2000:]) == pytest.approx(0.5, abs=0.03)


def test_the_sets_are_images_with_bright_ink(mnist_dir):
    pytest.importorskip("HersheyFonts")  # the written letters
    if not all(ood_sets.fonts(family) for family in ood_sets.FONT_FAMILIES.values()):
        pytest.skip("no fonts for the letter and glyph sets")
    digits, labels = mnist_digits(8, mnist_dir, "grey")
    sets = ood_sets.ood_sets(4, 0, digits, labels)
    assert len(sets) == 10 and {"blank", "strokes", "inverted", "noise", "reshaped digits"} <= set(sets)
    assert {"letters (DejaVu)", "glyphs (Liberation, held out)", "written letters (Hershey, held out)"} <= set(sets)
    for name, images in sets.items():
        assert images.shape == (4, 784) and images.min() >= 0 and images.max() <= 1, name
        if name not in ("blank", "inverted"):
            assert (images.max(axis=1) > 0.5).all(), name  # every image has ink
    assert np.array_equal(sets["inverted"], 1 - digits[:4])
    # letters are prepared as MNIST digits: centre of mass near the middle
    letters = sets["letters (DejaVu)"]
    rows = (letters.reshape(-1, 28, 28).sum(axis=2) * np.arange(28)).sum(axis=1) / letters.sum(axis=1)
    assert np.all(np.abs(rows - 14) < 2)


def test_reshaped_digits_are_no_digits_of_the_given_ones(mnist_dir):
    digits, labels = mnist_digits(40, mnist_dir, "grey")
    images = ood_sets.reshaped(digits, labels, 30, seed=0)
    assert images.shape == (30, 784) and images.min() >= 0 and images.max() <= 1
    assert not any(np.allclose(image, digit) for image in images for digit in digits)  # none left as it was
    assert np.array_equal(images, ood_sets.reshaped(digits, labels, 30, seed=0))  # a seed gives the same set


def test_written_letters_are_inked_letters_prepared_as_digits():
    pytest.importorskip("HersheyFonts")
    images = ood_sets.written(6, seed=0)
    assert images.shape == (6, 784) and images.min() >= 0 and images.max() <= 1
    assert ((images > 0.5).sum(axis=1) >= 5).all()  # every one has ink
    rows = (images.reshape(-1, 28, 28).sum(axis=2) * np.arange(28)).sum(axis=1) / images.sum(axis=1)
    assert np.all(np.abs(rows - 14) < 2)  # centre of mass near the middle, as MNIST digits
    assert np.array_equal(images, ood_sets.written(6, seed=0)) and not np.array_equal(images, ood_sets.written(6, 1))
    assert not set("0123456789IlOoqgZzb") & set(ood_sets.STROKE_CHARACTERS)  # written, these are digits
    assert len(ood_sets.stroke_glyphs()) > 35 * len(ood_sets.STROKE_FONTS)


def test_written_letters_come_from_distinct_faces_none_a_times_imitation():
    hershey = pytest.importorskip("HersheyFonts")

    def letters(name):
        glyphs = hershey.HersheyFonts(load_default_font=name).all_glyphs
        left_out = ood_sets.STROKE_LEFT_OUT.get(name, "")
        drawn = [c for c in ood_sets.STROKE_CHARACTERS if c in glyphs and glyphs[c].strokes and c not in left_out]
        return {c: str(glyphs[c].strokes) for c in drawn}

    faces = {name: letters(name) for name in ood_sets.STROKE_FONTS}
    times = [letters(name) for name in ("timesr", "timesi", "timesrb", "timesib")]  # the Latin Times faces
    for name, face in faces.items():  # Liberation Serif, a held-out face of bench.ood, is Times' metric twin
        assert not any(set(face.items()) & set(other.items()) for other in times), name
        for other_name, other in faces.items():
            shared = set(face.items()) & set(other.items())
            assert other_name == name or len(shared) <= 11, (name, other_name)  # Greek shares the capitals it has


HANDWRITING_ROWS = {  # each row's images in the tiny folder: its held-out part's, at most per_set (4)
    "kannada-test (held out)": 4,
    "kannada-test: zero (held out, digit-shaped)": 1,  # one zero of three held out
    "dig-mnist (held out)": 4,
    "dig-mnist: zero (held out, digit-shaped)": 2,  # all of dig-mnist is held out
    "quickdraw (held out)": 3,
    "math-operators (left out)": 4,
    "math-operators: division_slash (left out, digit-shaped)": 4,
    "math-operators: subtraction_minus (left out, digit-shaped)": 4,
}


def test_real_handwriting_is_reported_by_held_out_part_with_digit_shapes_apart(tmp_path, monkeypatch):
    rows = handwriting(str(handwriting_folder(tmp_path, monkeypatch)), per_set=4, seed=0)
    assert {name: len(images) for name, images in rows.items()} == HANDWRITING_ROWS
    for name, images in rows.items():
        assert images.shape[1] == 784 and images.min() >= 0 and images.max() == 1.0, name
    again = handwriting(str(tmp_path), per_set=4, seed=0)
    assert all(np.array_equal(rows[name], again[name]) for name in rows)  # a seed gives the same rows


def test_a_handwriting_folder_that_is_not_there_stops_the_benchmark_before_it_scores(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("bench.ood.Scorer.open", lambda *a: pytest.fail("scored before reading the handwriting"))
    with pytest.raises(SystemExit) as stopped:
        main(["--outliers-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    assert stopped.value.code == 2
    assert "nowhere does not exist. Expected the IDX files of kannada/" in capsys.readouterr().err


def test_the_benchmark_runs_and_reports_every_set(shipped_model, mnist_dir, tmp_path, monkeypatch):
    pytest.importorskip("HersheyFonts")  # the written letters
    if not ood_sets.fonts(ood_sets.FONT_FAMILIES["held_out"]):
        pytest.skip("no fonts for the letter and glyph sets")
    folder = str(handwriting_folder(tmp_path, monkeypatch))
    argv = ["--data-dir", str(mnist_dir), "--digits", "12", "--per-set", "4", "--outliers-dir", folder]
    main([*argv, "--out", str(tmp_path / "out")])
    report = json.loads((tmp_path / "out" / "ood.json").read_text())
    assert report["digits"] == 12 and report["model_dir"] == str(shipped_model)
    assert (tmp_path / "out" / "OOD.md").read_text() == markdown(report)
    assert len(report["flagged"]) == 10 + len(HANDWRITING_ROWS) and "reshaped digits" in report["flagged"]
    assert "written letters (Hershey, held out)" in report["flagged"]
    assert {name: report["images"][name] for name in HANDWRITING_ROWS} == HANDWRITING_ROWS
    assert set(HANDWRITING_ROWS) <= set(report["auroc"]["the service: distance and critic, 1 - p"])
    assert "| dig-mnist: zero (held out, digit-shaped) | 2 |" in markdown(report)
    assert f"held-out parts of {folder}" in markdown(report)
    service = report["auroc"]["the service: distance and critic, 1 - p"]
    assert service["inverted"] == 1.0 and service["noise"] >= 0.9
    assert 0 <= report["fpr_digits_threshold"] <= 1 and report["assessment_share_of_classify"] < 0.2
    assert "| blank |" in markdown(report) and "critic" in markdown(report)  # names the method it measured
    assert set(report["abstained_by_reason"]) == {"out_of_distribution", "low_probability", "critic_disagrees"}
    (at_default,) = [r for r in report["abstention_curve"] if r["min_probability"] == report["min_probability"]]
    assert at_default["abstained"] == pytest.approx(report["abstained"])  # the curve agrees with the answers
    shares = [row["abstained"] for row in report["abstention_curve"]]
    assert shares == sorted(shares)  # a stricter threshold never abstains on fewer


def test_the_benchmark_s_numbers_are_the_engine_s(shipped_model):
    """features() gives Scorer.score_now's answers on the images binarized as a request's default does."""
    scorer = Scorer.open(shipped_model)
    grey = np.random.default_rng(0).random((3, 784))
    found = features(scorer, grey, "threshold", noise_seed=2)
    engine = scorer.score_now((grey > 0.5).astype(np.float32), ClassifyOptions(seed=2))
    np.testing.assert_array_equal(found["log_px"], engine.bayes.log_px)
    np.testing.assert_array_equal(found["p_value"], engine.verdicts.p_value)
    np.testing.assert_array_equal(found["flagged"], engine.verdicts.flagged)
    np.testing.assert_array_equal(found["abstained"], engine.abstained)
