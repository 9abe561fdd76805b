"""Pictures of a model for its card: samples of every class and reconstructions of test digits."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from training.model import CVAE
from training.objectives import pixel_mean
from training.train import one_hot


def image_grid(images: np.ndarray, columns: int, side: int = 28, scale: int = 2) -> Image.Image:
    """Tile images [N, side*side] in [0, 1] into a greyscale grid, `columns` wide."""
    rows = -(-len(images) // columns)
    canvas = np.ones((rows * (side + 2), columns * (side + 2)), dtype=np.float32)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        canvas[r * (side + 2) + 1 : r * (side + 2) + 1 + side, c * (side + 2) + 1 : c * (side + 2) + 1 + side] = (
            img.reshape(side, side)
        )
    picture = Image.fromarray((255 * (1 - canvas)).round().astype(np.uint8), mode="L")
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)


@torch.no_grad()
def sample_grid(model: CVAE, per_class: int, seed: int) -> np.ndarray:
    """Means of p(x|z,y), z ~ N(0, I): `per_class` for each class, one row per class."""
    config = model.config
    generator = torch.Generator().manual_seed(seed)
    y = one_hot(torch.arange(config.num_classes).repeat_interleave(per_class), config.num_classes)
    z = torch.randn(len(y), config.latent_dim, generator=generator)
    return pixel_mean(model.decode(z, y), config).numpy()


@torch.no_grad()
def reconstruction_grid(model: CVAE, x: torch.Tensor, labels: torch.Tensor, per_class: int) -> np.ndarray:
    """Rows alternate test images and their reconstructions sigmoid(decode(mu(x, y), y))."""
    config = model.config
    picks = torch.cat([torch.nonzero(labels == c)[:per_class, 0] for c in range(config.num_classes)])
    xs = x[picks]
    y = one_hot(labels[picks], config.num_classes)
    mu, _ = model.encode(xs, y)
    recon = pixel_mean(model.decode(mu, y), config)
    half = len(picks) // 2
    rows = [xs[:half], recon[:half], xs[half:], recon[half:]]
    return torch.cat(rows).numpy()
