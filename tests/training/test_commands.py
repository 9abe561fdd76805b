"""Every command of the README's Training and "Scoring a data set" sections, end to end on one tiny model:
`cvae train` on 200 MNIST digits for one epoch, then export, screening, calibrate, evaluate, ais, score, and
`cvae-serve` on the repository; export never writes over a version, nor shows one half-written."""

import contextlib
import io
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from servers import running_server  # noqa: E402

from cvae.cli import main  # noqa: E402
from service.engine import adaptive  # noqa: E402
from service.engine.runtime import read_manifest  # noqa: E402
from training.evaluate import run as evaluate_run  # noqa: E402
from training.model import Checkpoint  # noqa: E402

TINY_MODEL = ["--latent-dim", "2", "--hidden-dims", "16", "--epochs", "1", "--num-samples", "1"]
TINY_CRITIC = ["--critic-epochs", "1", "--critic-outliers", "64", "--critic-limit", "64", "--critic-width", "1"]


def cvae(*args) -> tuple[int, str, str]:
    """`cvae ARGS` in this process: its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in args])
    return code, out.getvalue(), err.getvalue()


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, mnist_dir) -> Path:
    out = tmp_path_factory.mktemp("run") / "checkpoint.pt"
    code, stdout, _ = cvae("train", "--data-dir", mnist_dir, "--train-limit", 200, *TINY_MODEL, "--out", out)
    assert code == 0 and f"saved {out}" in stdout
    return out


@pytest.fixture(scope="module")
def repository(tmp_path_factory, checkpoint, mnist_dir) -> Path:
    """A model repository holding mnist-cvae 1.0.0: exported, screened and calibrated, by the commands."""
    root = tmp_path_factory.mktemp("models")
    model = root / "mnist-cvae" / "1.0.0"
    code, stdout, _ = cvae("export", checkpoint, "--out-dir", model, "--copy-checkpoint", "--description", "tiny")
    assert code == 0 and f"exported {model}" in stdout
    code, stdout, _ = cvae("screening", model, "--data-dir", mnist_dir, "--images", 4)
    assert code == 0 and "written to the manifest" in stdout
    code, stdout, _ = cvae(
        "calibrate", model, "--data-dir", mnist_dir, "--limit", 4, *TINY_CRITIC, "--critic-device", "cpu"
    )
    assert code == 0 and f"wrote {model / 'ood.npz'}: 4 validation images" in stdout
    return root


def test_train_a_short_run_validates_on_a_short_split(checkpoint):
    extra = Checkpoint.load(checkpoint).extra
    assert extra["num_train_images"] == 200 and len(extra["history"]) == 1
    assert extra["num_val_images"] == 19  # 200 training images, one in 11 of them again for validation


def test_export_screening_and_calibrate_make_a_complete_version(repository):
    model = repository / "mnist-cvae" / "1.0.0"
    manifest = read_manifest(model)
    assert manifest["version"] == "1.0.0" and manifest["description"] == "tiny" and manifest["latent_dim"] == 2
    assert manifest["screening"]["samples"] >= 1
    assert manifest["files"]["ood"]["reference"]["num_images"] == 4 and manifest["files"]["ood_critic"]
    for name in ("encoder.onnx", "decoder.onnx", "scorer.onnx", "ood.npz", "ood_critic.onnx", "checkpoint.pt"):
        assert (model / name).is_file()
    assert hidden(model.parent) == []  # nothing of the export left behind


def test_evaluate_writes_the_metrics_and_card(repository, mnist_dir):
    model = repository / "mnist-cvae" / "1.0.0"
    flags = ["--num-samples", 8, "--limit", 10, "--screen-samples", 2, "--margin", 20]
    code, _, _ = cvae("evaluate", model, "--data-dir", mnist_dir, *flags)
    assert code == 0
    metrics = read_manifest(model)["metrics"]
    assert metrics["num_test_images"] == 10 and np.isfinite(metrics["nll"])
    assert metrics["command"] == f"cvae evaluate {model} --num-samples 8 --limit 10 --screen-samples 2 --margin 20"
    assert metrics["screening"]["looks"] == [[2, 20.0]]
    assert "## Test figures" in (model / "MODEL_CARD.md").read_text()


def test_evaluate_reports_the_engines_answers(repository, mnist_dir):
    """`cvae evaluate`'s log p(x), accuracy and calibration are the engine's answers to each test image alone
    (seed noise_seed + i) with the screening asked for; its true-class figures come from the engine's
    estimates of the true class with all K samples, also where the screening dropped the true class."""
    from service.engine.scoring import Scorer
    from service.schemas.options import ClassifyOptions
    from training.data import load_mnist
    from training.evaluate import expected_calibration_error
    from training.train import binarize

    model, k, n = repository / "mnist-cvae" / "1.0.0", 64, 6
    metrics = evaluate_run(model, mnist_dir, num_samples=k, limit=n, card=False, screen_samples=4, margin=0.5)
    assert metrics["command"] == f"cvae evaluate {model} --num-samples {k} --limit {n} --screen-samples 4 --margin 0.5"
    scorer = Scorer.open(model, max_num_samples=k, screen_samples=4, margin=0.5)
    data = load_mnist(mnist_dir)
    x = binarize(torch.from_numpy(data.test_x), torch.Generator().manual_seed(0))[:n].numpy()
    labels = data.test_y[:n]
    options = [ClassifyOptions(num_samples=k, max_num_samples=k, seed=metrics["noise_seed"] + i) for i in range(n)]
    answers = [scorer.score_now(x[i : i + 1], options[i]) for i in range(n)]
    exhaustive = [o.model_copy(update={"adaptive": False}) for o in options]
    everything = [scorer.score_now(x[i : i + 1], exhaustive[i]) for i in range(n)]
    probs = np.concatenate([a.probs for a in answers])
    true = {
        name: np.array([getattr(e.classes, name)[0, y] for e, y in zip(everything, labels)])
        for name in ("log_px_y", "reconstruction", "kl")
    }
    assert metrics["nll"] == pytest.approx(-np.mean([a.bayes.log_px[0] for a in answers]), rel=1e-9)
    assert metrics["accuracy"] == np.mean(probs.argmax(1) == labels)
    assert metrics["ece_15_bins"] == pytest.approx(expected_calibration_error(probs, labels), rel=1e-9)
    assert metrics["nll_given_true_class"] == pytest.approx(-true["log_px_y"].mean(), rel=1e-5)
    assert metrics["reconstruction_cross_entropy"] == pytest.approx(-true["reconstruction"].mean(), rel=1e-5)
    assert metrics["kl"] == pytest.approx(true["kl"].mean(), rel=1e-5)
    used = np.concatenate([a.classes.num_samples for a in answers])
    assert metrics["screening"]["mean_samples_per_class"] == pytest.approx(used.mean())
    assert metrics["screening"]["images_rescored"] == (used[np.arange(n), labels] < k).sum() > 0


def test_evaluate_screens_as_the_model_does_unless_told(repository, mnist_dir):
    model = repository / "mnist-cvae" / "1.0.0"
    own = adaptive.screening_for(read_manifest(model))
    metrics = evaluate_run(model, mnist_dir, num_samples=64, limit=3, card=False)
    assert own.samples < 64 and metrics["screening"]["looks"] == own.record()
    assert metrics["command"] == f"cvae evaluate {model} --num-samples 64 --limit 3"
    metrics = evaluate_run(model, mnist_dir, num_samples=4, limit=3, card=False, screen_samples=0)
    assert metrics["screening"] is None
    assert metrics["command"] == f"cvae evaluate {model} --num-samples 4 --limit 3 --screen-samples 0"


def test_ais_compares_the_answers(repository, mnist_dir):
    model = repository / "mnist-cvae" / "1.0.0"
    flags = ["--limit", 2, "--chains", 2, "--temperatures", 5, "--leapfrog-steps", 2, "--start", "proposal"]
    code, _, _ = cvae("ais", model, "--data-dir", mnist_dir, *flags)
    assert code == 0 and (model / "ais.json").is_file()
    assert read_manifest(model)["metrics"]["ais"]["images"] == 2


def test_score_a_data_set(repository, tmp_path):
    ray = pytest.importorskip("ray")
    from batch.output import read_results

    digits = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "digits.npy", digits)
    model = repository / "mnist-cvae" / "1.0.0"
    flags = ["--model-dir", model, "--workers", 1, "--num-samples", 4, "--no-progress"]
    try:
        code, _, stderr = cvae("score", tmp_path / "digits.npy", "--out", tmp_path / "out", *flags)
    finally:
        ray.shutdown()  # the Ray this process started
    assert code == 0, stderr[-2000:]
    table = read_results(tmp_path / "out").to_pandas()
    assert len(table) == 3 and table["predicted"].between(0, 9).all()


def test_serve_the_repository(repository):
    partial = repository / "mnist-cvae" / ".2.0.0.partial-0000"  # an export under way: the service skips it
    partial.mkdir()
    (partial / "encoder.onnx").write_bytes(b"half-written")
    try:
        with running_server(None, model_repository=repository) as (base, _):
            (listed,) = httpx.get(f"{base}/v1/models").json()["models"]
            assert (listed["model"], listed["version"], listed["state"]) == ("mnist-cvae", "1.0.0", "ready")
            image = [0.0] * 784
            answer = httpx.post(f"{base}/v1/classify", json={"images": [image], "num_samples": 4}, timeout=30)
            assert answer.status_code == 200 and answer.json()["version"] == "1.0.0"
    finally:
        shutil.rmtree(partial)


def watch_the_export(monkeypatch, folder: Path, version: str) -> list[dict]:
    """What `folder` shows at the moment an export writes its manifest (its last file): filled in as it does."""
    import training.export

    seen = []
    write_manifest = training.export.write_manifest

    def spy(model_dir, manifest):
        old = folder / version / "manifest.json"
        shown = old.read_bytes() if old.exists() else None
        seen.append(
            {"visible": visible(folder), "hidden": hidden(folder), "manifest": shown, "writing": model_dir.name}
        )
        write_manifest(model_dir, manifest)

    monkeypatch.setattr(training.export, "write_manifest", spy)
    return seen


def test_export_writes_under_a_hidden_name_renamed_into_place(checkpoint, tmp_path, monkeypatch):
    folder = tmp_path / "mnist-cvae"
    seen = watch_the_export(monkeypatch, folder, "2.0.0")
    code, stdout, _ = cvae("export", checkpoint, "--out-dir", folder / "2.0.0", "--version", "2.0.0")
    assert code == 0
    (during,) = seen
    assert during["visible"] == [] and during["hidden"] == [during["writing"]]
    assert during["writing"].startswith(".2.0.0.partial-")
    assert (
        visible(folder) == ["2.0.0"] and hidden(folder) == [] and read_manifest(folder / "2.0.0")["version"] == "2.0.0"
    )


def test_export_with_the_data_screens_and_calibrates_before_the_version_appears(
    checkpoint, mnist_dir, tmp_path, monkeypatch
):
    """The README's form, `cvae export CHECKPOINT --copy-checkpoint --data-dir DIR`; its screening and calibrate
    (each run for real above) stand in as steps that record where they ran and what the repository showed."""
    import training.calibrate
    import training.screening

    folder = tmp_path / "mnist-cvae"
    steps = []

    def step(name):
        def run(model_dir, data, *args, **kwargs):
            files = sorted(p.name for p in Path(model_dir).iterdir())
            steps.append({"step": name, "in": Path(model_dir).name, "visible": visible(folder), "files": files})
            (Path(model_dir) / f"{name}.done").touch()

        return run

    monkeypatch.setattr(training.screening, "run", step("screening"))
    monkeypatch.setattr(training.calibrate, "run", step("calibrate"))
    flags = ["--version", "3.0.0", "--copy-checkpoint", "--data-dir", mnist_dir]
    code, _, _ = cvae("export", checkpoint, "--out-dir", folder / "3.0.0", *flags)
    assert code == 0 and [s["step"] for s in steps] == ["screening", "calibrate"]
    for seen in steps:
        assert seen["in"].startswith(".3.0.0.partial-") and seen["visible"] == []
        assert {"manifest.json", "checkpoint.pt"} <= set(seen["files"])
    assert {"screening.done", "calibrate.done", "checkpoint.pt"} <= set(visible(folder / "3.0.0"))
    assert hidden(folder) == []


def test_export_refuses_a_version_that_exists(repository, checkpoint):
    model = repository / "mnist-cvae" / "1.0.0"
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    code, _, stderr = cvae("export", checkpoint, "--out-dir", model)
    assert code == 2 and f"{model} already holds a model version" in stderr
    assert all(flag in stderr for flag in ("--version", "--out-dir", "--force"))
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before and hidden(model.parent) == []


def test_export_force_replaces_the_version_once_the_new_one_is_complete(repository, checkpoint, tmp_path, monkeypatch):
    folder = tmp_path / "mnist-cvae"
    shutil.copytree(repository / "mnist-cvae" / "1.0.0", folder / "1.0.0")
    old = (folder / "1.0.0" / "manifest.json").read_bytes()
    seen = watch_the_export(monkeypatch, folder, "1.0.0")
    code, _, _ = cvae("export", checkpoint, "--out-dir", folder / "1.0.0", "--force", "--description", "replaced")
    assert code == 0
    (during,) = seen
    assert during["visible"] == ["1.0.0"] and during["manifest"] == old  # the old version whole while writing
    assert read_manifest(folder / "1.0.0")["description"] == "replaced"
    assert not (folder / "1.0.0" / "ood.npz").exists()  # replaced, not merged into
    assert visible(folder) == ["1.0.0"] and hidden(folder) == []


def test_an_export_that_fails_leaves_nothing(tmp_path):
    folder = tmp_path / "mnist-cvae"
    code, _, err = cvae("export", tmp_path / "no-checkpoint.pt", "--out-dir", folder / "3.0.0")
    assert code == 2 and "no-checkpoint.pt does not exist" in err
    assert not folder.exists() or list(folder.iterdir()) == []  # the checkpoint is read before any folder is made
