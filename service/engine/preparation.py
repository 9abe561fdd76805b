"""What is done to read pixels before they are scored: the warnings about an image unlike MNIST's
digits, MNIST's own preparation of a drawing (crop, scale into 20x20, centre by mass), and the
binarization the Bernoulli likelihood needs."""

from __future__ import annotations

import numpy as np
from PIL import Image

# MNIST digits sit in the central 20x20 box: across the 60,000 training digits the outer 3-pixel frame
# averages at most 0.05 and at least 15 pixels exceed 0.5.
FRAME = 3
BRIGHT_FRAME = 0.5
MIN_INK_PIXELS = 10
BOX = 20  # MNIST scaled each digit into a 20x20 box, then centred its centre of mass in the field


def polarity_warning(pixels: np.ndarray, shape: tuple[int, int]) -> dict | None:
    """A warning when an image ([784] of `shape`, or [H, W] of any size) in [0, 1] looks like dark
    ink on a light background: its outer frame, FRAME pixels of a 28-pixel side and as much of any
    other, is mostly bright."""
    image = pixels if pixels.ndim == 2 else pixels.reshape(shape)
    (h, w), (rows, cols) = image.shape, shape
    top, left = max(1, round(FRAME * h / rows)), max(1, round(FRAME * w / cols))
    border = np.ones(image.shape, dtype=bool)
    border[top : h - top, left : w - left] = False
    frame = image[border]
    if frame.mean() <= BRIGHT_FRAME:
        return None
    return {
        "code": "reversed_polarity",
        "message": f"The border is mostly bright (mean {frame.mean():.2f}): this looks like dark ink on a light "
        "background. The model reads bright pixels (1 or 255) as ink, as in MNIST; send invert: true.",
    }


def emptiness_warning(pixels: np.ndarray) -> dict | None:
    """A warning when an image [784] in [0, 1] has too little ink to be a digit."""
    ink = int((pixels > 0.5).sum())
    if ink >= MIN_INK_PIXELS:
        return None
    return {
        "code": "nearly_empty",
        "message": f"Only {ink} pixels are brighter than 0.5 (every MNIST training digit has at least 15): the image "
        "is nearly empty, and its score says little about a digit.",
    }


def prepare_mnist(pixels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Prepare a free-form image ([784] of `shape`, or [H, W] of any size) in [0, 1] as MNIST's digits
    were, into a field of `shape` [784]: crop to the ink, scale it into a 20x20 box keeping its aspect
    ratio (anti-aliased: a large drawing is area-filtered, not point-sampled), and place it so that
    its centre of mass lies at the centre of the field. An image without ink is returned as it is,
    averaged down to the field if it is larger."""
    image = pixels if pixels.ndim == 2 else pixels.reshape(shape)
    inked = image > 0.05
    if not inked.any():
        return _as_field(image, shape)
    rows, cols = np.nonzero(inked.any(axis=1))[0], np.nonzero(inked.any(axis=0))[0]
    crop = image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = BOX / max(crop.shape)
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))  # (width, height)
    ink = Image.fromarray(np.round(255 * crop).astype(np.uint8), mode="L")
    # Lanczos widens its support by the reduction factor; reducing_gap first box-averages by a whole
    # factor, which only a crop over three times the box takes (a drawing, never a 28x28 image)
    digit = np.asarray(ink.resize(size, Image.LANCZOS, reducing_gap=3.0), dtype=np.float64) / 255.0  # [h, w]
    total = digit.sum()
    if total <= 0:
        return _as_field(image, shape)
    centre_y = (digit.sum(axis=1) * np.arange(digit.shape[0])).sum() / total
    centre_x = (digit.sum(axis=0) * np.arange(digit.shape[1])).sum() / total
    # MNIST's digits have their centre of mass at pixel (14, 14) of 0..27, within half a pixel
    top = int(np.clip(round(shape[0] / 2 - centre_y), 0, shape[0] - digit.shape[0]))
    left = int(np.clip(round(shape[1] / 2 - centre_x), 0, shape[1] - digit.shape[1]))
    field = np.zeros(shape)
    field[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return field.reshape(-1)


def _as_field(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An image [H, W] as it is when it has `shape`, else area-averaged to it: [784]."""
    if image.shape != shape:
        image = np.asarray(Image.fromarray(image.astype(np.float32), mode="F").resize(shape[::-1], Image.BOX))
    return image.reshape(-1).astype(np.float64)


def binarize(pixels: np.ndarray, method: str, threshold: float, rng: np.random.Generator) -> np.ndarray:
    """Grey pixels [N, 784] in [0, 1] -> what the likelihood scores.

    threshold: x = 1 where pixel > threshold; bernoulli: x ~ Bernoulli(pixel);
    none: pixels as they are (a Bernoulli model then needs them binary already).
    """
    if method == "threshold":
        return (pixels > threshold).astype(np.float32)
    if method == "bernoulli":
        return (rng.random(pixels.shape) < pixels).astype(np.float32)
    return pixels.astype(np.float32)
