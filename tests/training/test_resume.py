"""`cvae train` on one's own images: a run stopped midway resumes where it stopped and ends as an unbroken run
does; --name and --class-names name the model and its classes; a checkpoint already there is never replaced."""

import pytest

torch = pytest.importorskip("torch")

from synthetic import garments  # noqa: E402

import training.train  # noqa: E402
from training.cli import main  # noqa: E402
from training.model import Checkpoint  # noqa: E402

TINY = ["--latent-dim", "2", "--hidden-dims", "16", "--epochs", "3", "--batch-size", "16", "--num-samples", "2"]
TINY += ["--val-size", "9", "--threads", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return garments(tmp_path_factory.mktemp("resume") / "garments")


def train(data, out, *flags):
    return main(["train", "--data", str(data), "--out", str(out), *TINY, *flags])


class Stop(Exception):
    """The run is killed."""


def killed_in_epoch(monkeypatch, epoch: int) -> None:
    """The run is killed in `epoch`, before its validation: the epochs before it are saved."""
    validate, calls = training.train.validate, []

    def killed(*args):
        calls.append(1)
        if len(calls) == epoch:
            raise Stop
        return validate(*args)

    monkeypatch.setattr(training.train, "validate", killed)


def test_a_stopped_run_resumes_and_ends_as_an_unbroken_run(data, tmp_path, monkeypatch, capsys):
    assert train(data, tmp_path / "whole.pt") == 0
    killed_in_epoch(monkeypatch, 3)
    with pytest.raises(Stop):
        train(data, tmp_path / "split.pt")
    assert not (tmp_path / "split.pt").exists()
    assert (tmp_path / "split.pt.progress").exists()
    monkeypatch.undo()
    capsys.readouterr()
    assert train(data, tmp_path / "split.pt") == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "after epoch 2" in out
    assert "epoch   1 " not in out and "epoch   3 " in out
    assert not (tmp_path / "split.pt.progress").exists()  # gone once the checkpoint is saved
    whole, split = Checkpoint.load(tmp_path / "whole.pt"), Checkpoint.load(tmp_path / "split.pt")
    assert [r["val_bound_log_px"] for r in split.extra["history"]] == [
        r["val_bound_log_px"] for r in whole.extra["history"]
    ]
    for name, value in whole.state_dict.items():
        assert torch.equal(value, split.state_dict[name]), name


def test_progress_of_another_configuration_is_refused_not_resumed(data, tmp_path, monkeypatch, capsys):
    killed_in_epoch(monkeypatch, 2)
    with pytest.raises(Stop):
        train(data, tmp_path / "c.pt")
    monkeypatch.undo()
    assert train(data, tmp_path / "c.pt", "--seed", "5") == 2
    assert "holds a run of another configuration" in capsys.readouterr().err
    assert (tmp_path / "c.pt.progress").exists()  # kept: it is the user's


def test_name_and_class_names_name_the_model(data, tmp_path):
    assert train(data, tmp_path / "c.pt", "--name", "My Garments", "--class-names", "Boot, Coat,Shirt/top") == 0
    dataset = Checkpoint.load(tmp_path / "c.pt").extra["dataset"]
    assert dataset["name"] == "my-garments"
    assert dataset["class_names"] == ["Boot", "Coat", "Shirt/top"]


@pytest.mark.parametrize("names", ["a,b", "a,b,c,d", "a,a,b", "a,,b"])
def test_class_names_must_name_each_class_once(data, tmp_path, capsys, names):
    assert train(data, tmp_path / "c.pt", "--class-names", names) == 2
    assert "--class-names gives" in capsys.readouterr().err
    assert not (tmp_path / "c.pt").exists()


def test_a_checkpoint_already_there_is_not_replaced(data, tmp_path, capsys):
    (tmp_path / "c.pt").write_bytes(b"mine")
    assert train(data, tmp_path / "c.pt") == 2
    assert "exists" in capsys.readouterr().err
    assert (tmp_path / "c.pt").read_bytes() == b"mine"
