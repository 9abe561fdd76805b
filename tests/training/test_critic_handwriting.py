"""What the critic may learn from real handwriting, and how a step draws it."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from handwriting_files import handwriting_folder  # noqa: E402
from synthetic import synthetic_mnist  # noqa: E402

from training import critic as critics  # noqa: E402
from training.configs import CriticConfig  # noqa: E402
from training.handwriting import LEFT_OUT, for_training, load_handwriting, split  # noqa: E402


def test_the_critic_may_learn_from_each_training_part_but_the_digit_shaped_classes(tmp_path, monkeypatch):
    folder = handwriting_folder(tmp_path, monkeypatch)
    learned = for_training(folder)
    parts = split(load_handwriting(folder))
    assert learned.name == "kannada-test, quickdraw"  # dig-mnist and the left-out source are held out whole
    assert LEFT_OUT not in learned.name and len(parts["dig-mnist"].training.y) == 0
    kannada = parts["kannada-test"].training
    kept = kannada.take(~kannada.of_classes(("zero",)))  # the Kannada zero is drawn as a digit's 0 is
    quickdraw = parts["quickdraw"].training
    assert len(kept.y) < len(kannada.y) and len(learned.x) == len(kept.y) + len(quickdraw.y)
    assert np.array_equal(learned.x, np.concatenate([kept.x, quickdraw.x]))


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_each_step_draws_its_share_of_non_digits_from_the_handwriting(monkeypatch, share):
    data = synthetic_mnist()
    real = np.full((5, 784), 77, np.uint8)  # one grey level, which no made-up non-digit has everywhere
    seen = []
    binary = critics._binary
    monkeypatch.setattr(critics, "_binary", lambda grey, generator: seen.append(grey) or binary(grey, generator))
    config = CriticConfig(epochs=1, num_outliers=64, batch_size=32, width=1, handwriting_share=share, device="cpu")
    critics.train_critic(data.train_x[:96], data.train_y[:96], config, log=lambda _: None, handwriting=real)
    non_digits = torch.cat(seen[1::2])  # each step binarizes its digits, then its non-digits
    from_real = (non_digits == 77 / 255).all(dim=1).float().mean().item()
    assert len(non_digits) == 96 and (from_real == share if share in (0.0, 1.0) else 0.2 < from_real < 0.8)


def test_fine_tuning_goes_on_from_the_critic_it_is_given():
    data = synthetic_mnist()
    start = critics.Critic(width=1)
    weights = {name: value.clone() for name, value in start.state_dict().items()}
    config = CriticConfig(epochs=1, num_outliers=64, batch_size=32, width=1, learning_rate=0.0, device="cpu")
    tuned = critics.train_critic(data.train_x[:64], data.train_y[:64], config, log=lambda _: None, start=start)
    assert tuned is start and all(torch.equal(weights[n], v) for n, v in tuned.state_dict().items())
    config = CriticConfig(epochs=1, num_outliers=64, batch_size=32, width=1, device="cpu")
    critics.train_critic(data.train_x[:64], data.train_y[:64], config, log=lambda _: None, start=start)
    assert not all(torch.equal(weights[n], v) for n, v in start.state_dict().items())  # a step moved them
