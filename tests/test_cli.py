"""The one entry point: `cvae serve | train | export | evaluate | ais | download`."""

import subprocess
import sys


def cvae(*args):
    return subprocess.run([sys.executable, "-m", "cvae", *args], capture_output=True, text=True, timeout=60)


def test_help_lists_every_command():
    result = cvae("--help")
    assert result.returncode == 0
    for command in ("serve", "train", "export", "evaluate", "ais", "download"):
        assert f"  {command} " in result.stdout
    assert "refit" not in result.stdout


def test_each_command_has_help_with_defaults():
    serve = cvae("serve", "--help")
    assert serve.returncode == 0 and "--model-dir" in serve.stdout and "127.0.0.1" in serve.stdout
    train = cvae("train", "--help")
    assert train.returncode == 0 and "--epochs" in train.stdout and "default 100" in train.stdout
    evaluate = cvae("evaluate", "--help")
    assert evaluate.returncode == 0 and "default 5000" in evaluate.stdout
    assert "--flow-layers" in train.stdout and "--objective" in train.stdout  # how the shipped 2.0.0 was trained
    ais = cvae("ais", "--help")
    assert ais.returncode == 0 and all(word in ais.stdout for word in ("--temperatures", "--start", "proposal:"))


def test_unknown_command_and_missing_data_say_what_to_do(tmp_path):
    unknown = cvae("fly")
    assert unknown.returncode == 2 and "unknown command 'fly'" in unknown.stderr
    missing = cvae("train", "--data-dir", str(tmp_path / "none"))
    assert missing.returncode == 2 and "cvae download" in missing.stderr
