"""Images that are not digits, made for the critic to learn from (outlier exposure, Hendrycks et al. 2019).

Two kinds, half each:

- printed: letters, punctuation and Greek letters rendered from typefaces that ship with matplotlib
  (STIX, Computer Modern) and Pillow (Aileron), in random sizes, weights and slants, then prepared
  as MNIST digits were (service.images.prepare_mnist), so that only their shape and the way they
  were drawn differ from a digit;
- reshaped digits: training digits turned into shapes that are no digit: mirrored, upside down,
  on their side, halves of two different digits joined, two digits overlaid.

The typefaces of bench.ood_sets (DejaVu and Liberation) are left out on purpose: the benchmark
measures the critic on faces it never saw. Printed digits are left out too: a typed "7" is a 7.
"""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from service.images import prepare_mnist

SHAPE = (28, 28)
TYPEFACES = (  # in matplotlib's mpl-data/fonts/ttf
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmb10.ttf",
    "cmss10.ttf",
    "cmti10.ttf",
    "cmtt10.ttf",
)
CHARACTERS = string.ascii_letters + string.punctuation + "αβγδεζηθικλμνξπρστυφχψωΓΔΘΛΞΠΣΦΨΩ"
MIRRORED = frozenset({2, 3, 4, 5, 6, 7, 9})  # classes that are no digit when mirrored left to right
UPSIDE_DOWN = frozenset({2, 4, 5, 6, 7, 9})  # ... when flipped top to bottom
TURNED = frozenset({2, 3, 4, 5, 7})  # ... when turned half round (6 and 9 become each other)
MIN_INK = 5  # pixels above 0.5: fewer is a speck, not a glyph


def typefaces() -> list[Path]:
    """The TrueType files printed outliers are drawn from (matplotlib's copies)."""
    import matplotlib

    folder = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf"
    found = [folder / name for name in TYPEFACES if (folder / name).is_file()]
    if not found:
        raise FileNotFoundError(f"no typefaces under {folder}: install matplotlib (pip install -e '.[train]')")
    return found


def printed(n: int, rng: np.random.Generator) -> np.ndarray:
    """n printed characters [n, 784] in [0, 1], bright = ink, prepared as MNIST digits were."""
    faces = typefaces()
    images = []
    while len(images) < n:
        size = int(rng.integers(40, 90))
        pick = rng.integers(len(faces) + 1)
        font = ImageFont.load_default(size=size) if pick == len(faces) else ImageFont.truetype(str(faces[pick]), size)
        canvas = Image.new("L", (160, 160))
        weight = int(rng.integers(0, 3))  # extra outline width in pixels: heavier strokes
        text = CHARACTERS[rng.integers(len(CHARACTERS))]
        ImageDraw.Draw(canvas).text(
            (80, 80), text, fill=255, font=font, anchor="mm", stroke_width=weight, stroke_fill=255
        )
        canvas = canvas.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR)
        image = _square_28(np.asarray(canvas, dtype=np.float64) / 255.0)
        if image is not None:
            images.append(prepare_mnist(image.reshape(-1), SHAPE))
    return np.stack(images)


def _square_28(image: np.ndarray) -> np.ndarray | None:
    """The ink of a large image, padded to a square and shrunk to 28x28 (None when there is too little)."""
    rows, cols = np.nonzero(image.any(axis=1))[0], np.nonzero(image.any(axis=0))[0]
    if not len(rows):
        return None
    crop = image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    side = max(crop.shape)
    square = np.zeros((side, side))
    top, left = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
    square[top : top + crop.shape[0], left : left + crop.shape[1]] = crop
    small = Image.fromarray(np.uint8(np.round(255 * square)), mode="L").resize(SHAPE[::-1], Image.LANCZOS)
    small = np.asarray(small, dtype=np.float64) / 255.0
    return small if (small > 0.5).sum() >= MIN_INK else None


def reshaped_digits(pixels: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n shapes made from grey digits [N, 784] (uint8) of classes `labels` [N] that are no digit
    [n, 784] in [0, 1], prepared as MNIST digits were."""
    digits = pixels.reshape(-1, *SHAPE) / 255.0
    images = []
    while len(images) < n:
        i, j = rng.integers(len(digits), size=2)
        a, b, kind = digits[i], digits[j], rng.integers(6)
        if kind == 0 and labels[i] in MIRRORED:
            image = a[:, ::-1]
        elif kind == 1 and labels[i] in UPSIDE_DOWN:
            image = a[::-1]
        elif kind == 2 and labels[i] != 0:  # on its side
            image = np.rot90(a, k=1 + 2 * int(rng.integers(2)))
        elif kind == 3 and labels[i] in TURNED:
            image = a[::-1, ::-1]
        elif kind == 4 and labels[i] != labels[j]:  # top or left half of one, the rest of another
            image = a.copy()
            if rng.integers(2):
                image[SHAPE[0] // 2 :] = b[SHAPE[0] // 2 :]
            else:
                image[:, SHAPE[1] // 2 :] = b[:, SHAPE[1] // 2 :]
        elif kind == 5 and labels[i] != labels[j]:  # two digits overlaid, one shifted
            shift = tuple(int(s) for s in rng.integers(-6, 7, size=2))
            image = np.maximum(a, np.roll(b, shift, axis=(0, 1)))
        else:
            continue
        images.append(prepare_mnist(np.ascontiguousarray(image).reshape(-1), SHAPE))
    return np.stack(images)


def outliers(pixels: np.ndarray, labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n non-digits [n, 784] in [0, 1]: half printed characters, half reshaped digits."""
    rng = np.random.default_rng(seed)
    return np.concatenate([printed(n // 2, rng), reshaped_digits(pixels, labels, n - n // 2, rng)])
