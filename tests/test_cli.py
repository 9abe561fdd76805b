"""The one entry point: `cvae serve | score | train | export | screening | calibrate | evaluate | ais | download`."""

import json
import subprocess
import sys

import pytest

COMMANDS = ("serve", "score", "train", "export", "screening", "calibrate", "evaluate", "ais", "download")
# Runs `cvae` once per argument list given as JSON, as on the base install: the train and batch extras
# (PyTorch, ONNX, tqdm, matplotlib, Ray) cannot be imported. Prints each run's exit code, stdout and stderr.
WITHOUT_EXTRAS = """
import contextlib, io, json, sys
for name in ("torch", "onnx", "tqdm", "matplotlib", "ray"):
    sys.modules[name] = None  # `import torch` raises ModuleNotFoundError
from cvae.cli import main
runs = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit:
            code = exit.code
    runs.append({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
print(json.dumps(runs))
"""


def cvae(*args):
    return subprocess.run([sys.executable, "-m", "cvae", *args], capture_output=True, text=True, timeout=60)


def without_extras(*argvs: list[str]) -> list[dict]:
    """Each argument list's run of `cvae` with the train and batch extras missing."""
    script = [sys.executable, "-c", WITHOUT_EXTRAS, json.dumps(argvs)]
    result = subprocess.run(script, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def helps() -> dict[str, dict]:
    """Every command's --help, run without the extras."""
    runs = without_extras(["--help"], *([command, "--help"] for command in COMMANDS))
    return dict(zip(["cvae", *COMMANDS], runs))


def test_help_lists_every_command(helps):
    assert helps["cvae"]["code"] == 0
    for command in COMMANDS:
        assert f"  {command} " in helps["cvae"]["stdout"]
    assert "refit" not in helps["cvae"]["stdout"]


def test_every_help_works_without_the_train_extra(helps):
    for command in COMMANDS:
        assert helps[command]["code"] == 0 and helps[command]["stdout"].startswith("usage:"), helps[command]


def test_each_command_has_help_with_defaults_and_choices(helps):
    serve, train, ais = (helps[command]["stdout"] for command in ("serve", "train", "ais"))
    assert "--model-dir" in serve and "127.0.0.1" in serve
    assert "--epochs" in train and "default 100" in train
    assert "default 5000" in helps["evaluate"]["stdout"]
    assert "--flow-layers" in train and "--objective" in train  # how the shipped 2.0.0 was trained
    for choices in ("{iwae,dreg}", "{bernoulli,logistic,gaussian}", "{cpu,cuda,cuda:N}"):
        assert choices in train
    assert "{auto,cpu,cuda,cuda:N}" in helps["calibrate"]["stdout"]
    assert all(word in ais for word in ("--temperatures", "--start {encoder,prior,proposal}", "proposal:"))
    assert "--mirror URL" in helps["download"]["stdout"] and "--force" in helps["export"]["stdout"]


def test_a_bad_value_is_an_error_naming_the_option():
    wrong = {
        ("train", "--objective", "sgd"): "argument --objective: must be one of iwae, dreg, not 'sgd'",
        ("train", "--likelihood", "poisson"): "argument --likelihood: must be one of bernoulli, logistic, gaussian",
        ("train", "--device", "gpu"): "argument --device: must be one of cpu, cuda, cuda:N, not 'gpu'",
        ("train", "--epochs", "0"): "argument --epochs: must be at least 1, not 0",
        ("train", "--hidden-dims", "64", "-1"): "argument --hidden-dims: must be at least 1, not -1",
        ("train", "--elbo-weight", "1.5"): "argument --elbo-weight: must be at most 1.0",
        ("train", "--batch-size", "ten"): "argument --batch-size: invalid int value: 'ten'",
        ("calibrate", "m", "--critic-device", "tpu"): "argument --critic-device: must be one of auto, cpu, cuda",
        ("calibrate", "m", "--limit", "3"): "argument --limit: must be 0 (all) or at least 4",
        ("ais", "m", "--start", "posterior"): "argument --start: must be one of encoder, prior, proposal",
        ("ais", "m", "--chains", "0"): "argument --num-chains/--chains: must be at least 1",
        ("evaluate", "m", "--num-samples", "1"): "argument --num-samples: must be at least 2",
        ("evaluate", "m", "--margin", "0"): "argument --margin: must be above 0",
        ("export", "c.pt", "--version", "new"): "argument --version: version folder 'new' is not a number",
    }
    runs = without_extras(*(list(argv) for argv in wrong))
    for (argv, message), run in zip(wrong.items(), runs):
        assert run["code"] == 2 and message in run["stderr"], (argv, run)
        assert "Traceback" not in run["stderr"]


def test_a_command_that_needs_the_train_extra_says_so(tmp_path):
    (run,) = without_extras(["train", "--data-dir", str(tmp_path), "--epochs", "1"])
    assert run["code"] == 2 and "cvae train needs the train extra" in run["stderr"]
    assert "pip install -e '.[train]'" in run["stderr"] and "Traceback" not in run["stderr"]


def test_the_cuda_devices_are_taken_by_number():
    from training.configs import CriticConfig, TrainConfig

    assert TrainConfig(device="cuda:1").device == "cuda:1" and CriticConfig(device="auto").device == "auto"
    for wrong in ("cuda:N", "cuda:", "gpu", "auto"):
        with pytest.raises(ValueError, match="device must be one of cpu, cuda, cuda:N"):
            TrainConfig(device=wrong)


def test_unknown_command_and_missing_data_say_what_to_do(tmp_path):
    unknown = cvae("fly")
    assert unknown.returncode == 2 and "unknown command 'fly'" in unknown.stderr
    missing = cvae("train", "--data-dir", str(tmp_path / "none"))
    assert missing.returncode == 2 and "cvae download" in missing.stderr


def test_a_missing_checkpoint_or_model_directory_is_an_error_saying_what_to_do(tmp_path, mnist_dir):
    checkpoint = cvae("export", str(tmp_path / "none.pt"), "--out-dir", str(tmp_path / "out"))
    assert checkpoint.returncode == 2 and "none.pt does not exist" in checkpoint.stderr
    assert "cvae train --out" in checkpoint.stderr and "Traceback" not in checkpoint.stderr
    empty = cvae("screening", str(tmp_path), "--data-dir", str(mnist_dir), "--images", "2")
    assert empty.returncode == 2 and "Traceback" not in empty.stderr and "manifest" in empty.stderr
