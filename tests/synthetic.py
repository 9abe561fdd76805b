"""Synthetic digits: ones that a tiny model learns in seconds, and ones a loaded model draws itself; and a
folder of small garments in three named classes, a user's own images."""

import numpy as np
from PIL import Image

from training.data import Mnist


def synthetic_mnist(n_train=300, n_test=50):
    """Each class lights a different band of rows, so a tiny model can tell them apart."""
    rng = np.random.default_rng(0)

    def make(n):
        y = np.arange(n) % 10
        x = rng.integers(0, 40, (n, 28, 28))
        for i, c in enumerate(y):
            x[i, 2 * c + 3 : 2 * c + 7, 4:24] = 230
        return x.reshape(n, 784).astype(np.uint8), y.astype(np.int64)

    train_x, train_y = make(n_train)
    test_x, test_y = make(n_test)
    return Mnist(train_x, train_y, test_x, test_y)


def model_digits(model, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n binary images [n, 784] drawn from a loaded model (service.engine.runtime.Model) itself, and their
    classes 0, 1, 2, ... in turn."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % model.num_classes
    logits = model.decode(rng.standard_normal((n, model.latent_dim)), y)
    return (rng.random(logits.shape) < 1 / (1 + np.exp(-logits))).astype(np.float32), y


SHAPE = (12, 16)  # H, W
CLASSES = ("boot", "coat", "shirt")


def garments(root, per_class=30):
    """Each class a bright band at its own rows, with noise."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 60, SHAPE, dtype=np.uint8)
            image[4 * label : 4 * label + 4] = 230
            Image.fromarray(image).save(root / name / f"{i}.png")
    return root
