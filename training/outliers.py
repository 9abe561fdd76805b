"""Images that are not digits, made for the critic to learn from (outlier exposure, Hendrycks et al. 2019).

Two kinds, half each:

- printed: letters, punctuation and Greek letters rendered from nine typeface families, none of
  them the benchmark's: STIX and Computer Modern (matplotlib's copies), Roboto, Lato, Source Sans,
  Source Serif, Fredoka One and Amatic SC (font packages of the `train` extra) and Aileron
  (Pillow's own), in random sizes, weights and slants, then prepared as MNIST digits were
  (service.engine.pixels.prepare_mnist), so that only their shape differs from a digit's;
- reshaped digits: training digits turned into shapes that are no digit: mirrored, upside down,
  on their side, halves of two different digits joined, two digits overlaid, reversed polarity.

The typefaces of bench.ood_sets (DejaVu and Liberation) are left out on purpose: the benchmark
measures the critic on faces it never saw. Printed digits are left out too: a typed "7" is a 7.
"""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from service.engine.pixels import prepare_mnist

SHAPE = (28, 28)
MATPLOTLIB_FAMILIES = {  # in matplotlib's mpl-data/fonts/ttf
    "STIX": ("STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf"),
    "Computer Modern": ("cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmti10.ttf", "cmtt10.ttf"),
}
PACKAGED_FAMILIES = (  # Python packages that ship a typeface's files in <package>/files
    "font_roboto",
    "font_lato",
    "font_source_sans_pro",
    "font_source_serif_pro",
    "font_fredoka_one",
    "font_amatic_sc",
)
PILLOW_DEFAULT = None  # a family's only face: Pillow's own (Aileron)
CHARACTERS = string.ascii_letters + string.punctuation + "αβγδεζηθικλμνξπρστυφχψωΓΔΘΛΞΠΣΦΨΩ"
MIRRORED = frozenset({2, 3, 4, 5, 6, 7, 9})  # classes that are no digit when mirrored left to right
UPSIDE_DOWN = frozenset({2, 4, 5, 6, 7, 9})  # ... when flipped top to bottom
TURNED = frozenset({2, 3, 4, 5, 7})  # ... when turned half round (6 and 9 become each other)
MIN_INK = 5  # pixels above 0.5: fewer is a speck, not a glyph


def shrink_to_field(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray | None:
    """A large grey drawing [H, W] in [0, 1] (a rendered glyph) as a field of `shape`: cropped to
    its ink, padded to a square about it and shrunk with anti-aliasing, ready for prepare_mnist.
    None when it has no ink."""
    rows, cols = np.nonzero(image.any(axis=1))[0], np.nonzero(image.any(axis=0))[0]
    if not len(rows):
        return None
    crop = image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    side = max(crop.shape)
    square = np.zeros((side, side))
    top, left = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
    square[top : top + crop.shape[0], left : left + crop.shape[1]] = crop
    small = Image.fromarray(np.uint8(np.round(255 * square)), mode="L").resize(shape[::-1], Image.LANCZOS)
    return np.asarray(small, dtype=np.float64) / 255.0


def typefaces() -> dict[str, list[Path | None]]:
    """The typeface families printed outliers are drawn from, each with its TrueType files:
    matplotlib's copies, the font packages of the `train` extra, and Pillow's default face."""
    import importlib.util

    import matplotlib

    folder = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf"
    families: dict[str, list[Path | None]] = {
        name: [folder / file for file in files if (folder / file).is_file()]
        for name, files in MATPLOTLIB_FAMILIES.items()
    }
    for package in PACKAGED_FAMILIES:
        spec = importlib.util.find_spec(package)
        files = sorted((Path(spec.origin).parent / "files").glob("*.ttf")) if spec and spec.origin else []
        families[package.removeprefix("font_")] = files
    families["Aileron"] = [PILLOW_DEFAULT]
    missing = [name for name, files in families.items() if not files]
    if missing:
        raise FileNotFoundError(f"typefaces missing: {missing}; install the train extra (pip install -e '.[train]')")
    return families


def _font(face: Path | None, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size) if face is PILLOW_DEFAULT else ImageFont.truetype(str(face), size)


def printed(n: int, rng: np.random.Generator) -> np.ndarray:
    """n printed characters [n, 784] in [0, 1], bright = ink, prepared as MNIST digits were: a family
    drawn uniformly, then one of its faces, then one of the characters that face has."""
    families = list(typefaces().values())
    alphabets = [[_alphabet(_font(face, 60)) for face in faces] for faces in families]
    images = []
    while len(images) < n:
        size = int(rng.integers(40, 90))
        family = int(rng.integers(len(families)))
        face = int(rng.integers(len(families[family])))
        font = _font(families[family][face], size)
        alphabet = alphabets[family][face]
        canvas = Image.new("L", (160, 160))
        weight = int(rng.integers(0, 3))  # extra outline width in pixels: heavier strokes
        text = alphabet[rng.integers(len(alphabet))]
        ImageDraw.Draw(canvas).text(
            (80, 80), text, fill=255, font=font, anchor="mm", stroke_width=weight, stroke_fill=255
        )
        image = prepared(canvas, rng)
        if image is not None:
            images.append(image)
    return _stacked(images)


def prepared(canvas: Image.Image, rng: np.random.Generator) -> np.ndarray | None:
    """A drawn glyph turned by up to 15 degrees either way and prepared as MNIST digits were [784];
    None when too little ink is left."""
    canvas = canvas.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR)
    image = shrink_to_field(np.asarray(canvas, dtype=np.float64) / 255.0, SHAPE)
    if image is None or (image > 0.5).sum() < MIN_INK:
        return None
    return prepare_mnist(image.reshape(-1), SHAPE)


def _stacked(images: list[np.ndarray]) -> np.ndarray:
    return np.stack(images) if images else np.zeros((0, SHAPE[0] * SHAPE[1]))


def _alphabet(font: ImageFont.FreeTypeFont) -> str:
    """The CHARACTERS that `font` draws (not as its "missing glyph" box)."""
    missing = np.asarray(font.getmask("\uffff"))
    return "".join(c for c in CHARACTERS if not np.array_equal(np.asarray(font.getmask(c)), missing))


def reshaped_digits(pixels: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n shapes made from grey digits [N, 784] (uint8) of classes `labels` [N] that are no digit
    [n, 784] in [0, 1], prepared as MNIST digits were."""
    digits = pixels.reshape(-1, *SHAPE) / 255.0
    images = []
    while len(images) < n:
        i, j = rng.integers(len(digits), size=2)
        a, b, kind = digits[i], digits[j], rng.integers(7)
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
        elif kind == 6:  # reversed polarity: dark strokes on a bright page
            images.append(1.0 - a.reshape(-1))
            continue
        else:
            continue
        images.append(prepare_mnist(np.ascontiguousarray(image).reshape(-1), SHAPE))
    return np.stack(images)


def outliers(pixels: np.ndarray, labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n non-digits [n, 784] in [0, 1]: half printed characters, half reshaped digits."""
    rng = np.random.default_rng(seed)
    return np.concatenate([printed(n // 2, rng), reshaped_digits(pixels, labels, n - n // 2, rng)])
