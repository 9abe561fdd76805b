"""The critic's made-up non-digits, its training and its exported graph."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")

import onnxruntime as ort  # noqa: E402
from synthetic import synthetic_mnist  # noqa: E402

from service.engine.runtime import sha256  # noqa: E402
from training import outliers  # noqa: E402
from training.critic import (  # noqa: E402
    CRITIC_FILE,
    HALVED_MIN_SIZE,
    WEIGHTS,
    Critic,
    CriticConfig,
    CriticGraph,
    copy,
    export,
    graph_outputs,
    read_graph,
    resolved_device,
    train_critic,
    write_graph,
)
from training.export import export_graph  # noqa: E402


def _centre_of_mass(images):
    grid = images.reshape(-1, 28, 28)
    rows = (grid.sum(axis=2) * np.arange(28)).sum(axis=1) / grid.sum(axis=(1, 2))
    cols = (grid.sum(axis=1) * np.arange(28)).sum(axis=1) / grid.sum(axis=(1, 2))
    return rows, cols


def test_outliers_are_prepared_as_mnist_digits_were_and_reproducible():
    data = synthetic_mnist()
    images = outliers.outliers(data.train_x, data.train_y, 40, seed=0)
    assert images.shape == (40, 784) and images.min() >= 0 and images.max() <= 1
    assert ((images > 0.5).sum(axis=1) >= outliers.MIN_INK).all()
    rows, cols = _centre_of_mass(images)
    assert np.all(np.abs(rows - 13.5) < 1.5) and np.all(np.abs(cols - 13.5) < 1.5)
    np.testing.assert_array_equal(images, outliers.outliers(data.train_x, data.train_y, 40, seed=0))
    assert not np.array_equal(images, outliers.outliers(data.train_x, data.train_y, 40, seed=1))


def test_printed_characters_leave_out_the_benchmark_typefaces():
    families = outliers.typefaces()
    assert len(families) == len(outliers.MATPLOTLIB_FAMILIES) + len(outliers.PACKAGED_FAMILIES) + 1
    names = [face.name for faces in families.values() for face in faces if face is not None]
    assert names and not any(name.startswith(("DejaVu", "Liberation")) for name in names)
    assert not set("0123456789") & set(outliers.CHARACTERS)  # a typed 7 is a 7


def test_reshaped_digits_are_mirrored_turned_or_joined_never_left_as_they_were():
    data = synthetic_mnist()
    made = outliers.reshaped_digits(data.train_x, data.train_y, 30, np.random.default_rng(0))
    prepared = {outliers.prepare_mnist(row / 255.0, (28, 28)).round(6).tobytes() for row in data.train_x}
    assert not any(image.round(6).tobytes() in prepared for image in made)


def test_the_exported_graph_gives_the_modules_log_odds_and_digit_probabilities(tmp_path):
    data = synthetic_mnist()
    config = CriticConfig(epochs=1, num_outliers=64, batch_size=32, width=2, device="cpu")
    critic = train_critic(data.train_x, data.train_y, config, log=lambda _: None)
    entry = export(tmp_path, critic, len(data.train_x), config, {"seed": 0, "val_size": 0}, seconds=1.0)
    x = (np.random.default_rng(0).random((5, 784)) < 0.3).astype(np.float32)
    log_odds, digit_log_probs = ort.InferenceSession(str(tmp_path / CRITIC_FILE)).run(None, {"x": x})
    expected_log_odds, expected_digits = graph_outputs(_halved(critic), x)
    np.testing.assert_allclose(log_odds, expected_log_odds, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(digit_log_probs, expected_digits, rtol=1e-4, atol=1e-4)
    assert digit_log_probs.shape == (5, 10)
    np.testing.assert_allclose(np.exp(digit_log_probs).sum(axis=1), 1.0, rtol=1e-5)
    assert entry["weights"] == WEIGHTS and entry["training"]["config"]["epochs"] == 1
    assert entry["outputs"] == {"critic": ["N"], "digit_log_probs": ["N", 10]}
    assert entry["training"]["config"]["width"] == 2 and critic.head[0].out_features == 2 * 128


def _halved(critic):
    """The critic with its large weights rounded to float16, as the exported graph stores them."""
    from copy import deepcopy

    rounded = deepcopy(critic)
    with torch.no_grad():
        for weight in rounded.parameters():
            if weight.numel() >= HALVED_MIN_SIZE:
                weight.copy_(weight.half().float())
    return rounded


def test_copying_a_critic_halves_its_weights_once_and_adds_the_digit_output(tmp_path):
    data = synthetic_mnist()
    config = CriticConfig(epochs=1, num_outliers=64, batch_size=32, device="cpu")
    critic = train_critic(data.train_x, data.train_y, config, log=lambda _: None)
    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir()
    target.mkdir()
    export_graph(CriticGraph(critic), (torch.zeros(2, 784),), source / CRITIC_FILE, {"x": {0: "N"}}, ["critic"])
    full = (source / CRITIC_FILE).stat().st_size
    old = {"file": CRITIC_FILE, "sha256": "of the float32 graph", "outputs": {"critic": ["N"]}, "training": {}}
    entry = copy(target, source, old)  # a float32 graph of one output, as graphs were once made
    assert (target / CRITIC_FILE).stat().st_size < 0.6 * full
    assert entry["sha256"] == sha256(target / CRITIC_FILE) and entry["weights"] == WEIGHTS
    assert entry["outputs"] == {"critic": ["N"], "digit_log_probs": ["N", 10]} and entry["training"] == {}
    assert copy(target, target, entry) == entry  # copying again changes nothing
    x = (np.random.default_rng(1).random((5, 784)) < 0.3).astype(np.float32)
    log_odds, digit_log_probs = ort.InferenceSession(str(target / CRITIC_FILE)).run(None, {"x": x})
    expected_log_odds, expected_digits = graph_outputs(_halved(critic), x)
    np.testing.assert_allclose(log_odds, expected_log_odds, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(digit_log_probs, expected_digits, rtol=1e-4, atol=1e-4)


def test_reading_a_graph_back_gives_the_critic_it_was_made_from(tmp_path):
    torch.manual_seed(0)
    critic = Critic(width=2).eval()
    write_graph(tmp_path, critic)
    back = read_graph(tmp_path / CRITIC_FILE)
    assert back.head[0].out_features == 2 * 128
    expected = _halved(critic).state_dict()
    assert back.state_dict().keys() == expected.keys()
    for name, weight in back.state_dict().items():
        torch.testing.assert_close(weight, expected[name], rtol=0, atol=0)


def test_auto_device_is_the_gpu_when_torch_sees_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolved_device("auto") == "cpu" and resolved_device("cuda") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolved_device("auto") == "cuda" and resolved_device("cpu") == "cpu"


def test_printed_characters_come_only_from_glyphs_the_typeface_has():
    from PIL import ImageFont

    default = outliers._alphabet(ImageFont.load_default(size=60))  # Pillow's Aileron has no Greek
    assert "a" in default and "Z" in default and "α" not in default
    stix = outliers.typefaces()["STIX"][0]
    assert "α" in outliers._alphabet(ImageFont.truetype(str(stix), 60))


def test_reshaped_digits_include_reversed_polarity():
    data = synthetic_mnist()
    made = outliers.reshaped_digits(data.train_x, data.train_y, 60, np.random.default_rng(0))
    assert (made.mean(axis=1) > 0.5).any() and (made.mean(axis=1) < 0.5).any()


def test_calibrate_flags_set_the_critics_training():
    from training.cli import build_parser, critic_config

    flags = ["calibrate", "models/x", "--critic-epochs", "10", "--critic-outliers", "120000", "--critic-limit", "9"]
    flags += ["--critic-width", "3", "--critic-device", "cpu"]
    expected = CriticConfig(epochs=10, num_outliers=120000, train_limit=9, width=3, device="cpu")
    assert critic_config(build_parser().parse_args(flags)) == expected
    assert critic_config(build_parser().parse_args(["calibrate", "models/x"])) == CriticConfig()
    # every field has its flag under its own name too, and --seed stays the binarization seed
    flags = ["calibrate", "models/x", "--critic-num-outliers", "7", "--critic-train-limit", "5", "--seed", "4"]
    flags += ["--critic-batch-size", "16", "--critic-learning-rate", "0.01", "--critic-seed", "3"]
    args = build_parser().parse_args(flags)
    assert args.seed == 4
    expected = CriticConfig(num_outliers=7, train_limit=5, batch_size=16, learning_rate=0.01, seed=3)
    assert critic_config(args) == expected


def test_calibrate_takes_the_critic_s_weight_and_refuses_one_off_the_scale(capsys):
    from training.cli import build_parser

    assert build_parser().parse_args(["calibrate", "models/x"]).critic_weight is None  # calibrate: CRITIC_WEIGHT
    assert build_parser().parse_args(["calibrate", "models/x", "--critic-weight", "0.5"]).critic_weight == 0.5
    for wrong in ("1.5", "nan", "half"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["calibrate", "models/x", "--critic-weight", wrong])
        error = capsys.readouterr().err
        assert f"argument --critic-weight: '{wrong}'" in error and "a number in [0, 1]" in error
