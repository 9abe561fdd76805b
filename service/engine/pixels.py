"""Pixels from what is sent to what the likelihood scores.

- Pixels sent as numbers read into arrays: their shape, the type of each value and the scale it was
  sent on ([0, 1] or integers 0-255), each refusal naming where the fault lies, what it is and the fix.
- The warnings about an image unlike MNIST's digits, MNIST's own preparation of a drawing (crop, scale
  into 20x20, centre by mass), and the binarization the Bernoulli likelihood needs.

Pixels are bright where there is ink (1 or 255), dark elsewhere, as in MNIST."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from service.engine.images import ANY_SIZE, PixelBudget
from service.engine.ood import MIN_INK_PIXELS
from service.failures import InputError

# MNIST digits sit in the central 20x20 box: across the 60,000 training digits the outer 3-pixel frame
# averages at most 0.05 and at least 15 pixels exceed 0.5.
FRAME = 3
BRIGHT_FRAME = 0.5
BOX = 20  # MNIST scaled each digit into a 20x20 box, then centred its centre of mass in the field


def parse_pixels(
    values, field: str, shape: tuple[int, int], scale: str, budget: PixelBudget | None = None, any_size: str = ANY_SIZE
) -> np.ndarray:
    """784 numbers or 28x28 nested lists, in [0, 1] or 0-255 -> float pixels in [0, 1]: [784]; with a
    budget, also rows of any equal length within it -> [H, W]. A pixel that is not a JSON number, or
    is off the scale, is refused naming where it is."""
    size = shape[0] * shape[1]
    if isinstance(values, list) and (found := _not_a_number(values)):
        where, value = found
        raise InputError(
            field, f"holds {_described(value)} at {field}{where}: pixels must be JSON numbers{_fix(value)}."
        )
    try:
        array = np.asarray(values, dtype=np.float64)  # as sent: [784] or [H, W]
    except (ValueError, TypeError, OverflowError) as error:
        wanted = "rows of numbers of equal length" if budget else f"{shape[0]}x{shape[1]} nested lists of numbers"
        raise InputError(field, f"must be {size} numbers or {wanted}.") from error
    rows = array.reshape(shape) if array.shape == (size,) else array
    if budget is not None:
        if rows.ndim != 2 or not rows.size:
            raise InputError(
                field, f"has shape {list(array.shape)}; send {size} numbers or rows of numbers of equal length."
            )
        budget.spend(field, *rows.shape, f"has {rows.shape[0]} rows of {rows.shape[1]} numbers")
    elif array.shape not in ((size,), shape):
        wanted = f"send {size} numbers or {shape[0]} rows of {shape[1]} numbers"
        raise InputError(
            field, f"has shape {list(array.shape)}; {wanted}" + (any_size if array.ndim == 2 else "") + "."
        )
    if not np.isfinite(array).all():
        raise InputError(field, "contains NaN or infinite values; send finite pixel values.")
    unit = _on_unit_scale(array, field, scale)
    return unit.reshape(rows.shape) if budget is not None else unit.reshape(-1)


_NUMBER = {int, float}


def _not_a_number(values: list, where: str = "") -> tuple[str, object] | None:
    """Where the first pixel of an image's rows (or of its flat list) that is not a JSON number is
    ("[5]", "[3][5]"), and what it is: numpy would read "0" as 0 and true as 1. Lists deeper than rows
    are left to the shape check."""
    if set(map(type, values)) <= _NUMBER:
        return None
    for i, value in enumerate(values):
        if type(value) is list:
            if not where and (found := _not_a_number(value, f"[{i}]")):
                return found
        elif type(value) not in _NUMBER:
            return f"{where}[{i}]", value
    return None


def _described(value) -> str:
    if isinstance(value, str):
        return f"the string {json.dumps(value[:20] + ('...' if len(value) > 20 else ''))}"
    return json.dumps(value) if value is None or isinstance(value, bool) else f"a JSON {type(value).__name__}"


def _fix(value) -> str:
    """How to send a pixel that arrived as `value` (not a number)."""
    if isinstance(value, bool):
        return f", not booleans: send {int(value)}, not {json.dumps(value)}"
    if value is None:
        return ": send 0 for background, not null"
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return ", not strings"
        if np.isfinite(number):
            return f", without quotes: send {value.strip()}, not {json.dumps(value)}"
    return ""


def _on_unit_scale(array: np.ndarray, field: str, scale: str) -> np.ndarray:
    """Pixels as sent, on `scale` ('unit': [0, 1]; 'byte': integers 0-255; 'auto': 'byte' if any exceeds
    1) -> [0, 1]. A value off the scale is refused naming where it is, the scale and what is wrong."""
    flat = array.reshape(-1)

    def first(wrong: np.ndarray) -> str:  # "images[0][123] is 1.5"
        i = int(np.argmax(wrong))
        where = "".join(f"[{j}]" for j in np.unravel_index(i, array.shape))
        return f"{field}{where} is {np.format_float_positional(flat[i], trim='-')}"

    fractional, above_one, above_byte = flat != np.round(flat), flat > 1, flat > 255
    if (flat < 0).any():
        raise InputError(
            field,
            f"has a negative pixel: {first(flat < 0)}, and both scales start at 0 ([0, 1] floats, integers 0-255); "
            "if the image was normalized (to [-1, 1], or by a mean and standard deviation), send it as it was before.",
        )
    byte_fits = not (fractional.any() or above_byte.any())
    if scale == "auto":
        if not above_one.any():
            return array
        if byte_fits:
            return array / 255.0
        ink = flat[flat > 0]
        if (ink <= 1).mean() > 0.5:  # most ink within [0, 1]: floats, a few beyond
            raise InputError(
                field,
                f"holds values that look like [0, 1] floats, but {first(above_one)}: on that scale pixels lie in "
                "[0, 1]; clip the image to [0, 1], or send it as integers 0-255.",
            )
        if above_byte.any():
            raise InputError(
                field,
                f"holds values that look like the 0-255 scale, but {first(above_byte)}: pixels run from 0 to 255; "
                "clip the image to 0-255, or rescale it to [0, 1].",
            )
        raise InputError(
            field,
            f"holds values that look like the 0-255 scale, but {first(fractional)}, not an integer: round the "
            "pixels, or divide them by 255 to send [0, 1] floats.",
        )
    if scale == "unit":
        if above_one.any():
            other = "; or send pixel_scale 'byte' for these integers 0-255" if byte_fits else ""
            raise InputError(
                field,
                f"on the [0, 1] scale (pixel_scale 'unit') must lie in [0, 1], but {first(above_one)}: clip the "
                f"image to [0, 1]{other}.",
            )
        return array
    if above_byte.any():
        raise InputError(
            field,
            f"on the 0-255 scale (pixel_scale 'byte') must run from 0 to 255, but {first(above_byte)}: clip the "
            "image to 0-255.",
        )
    if fractional.any():
        other = "; or send pixel_scale 'unit' for these [0, 1] floats" if not above_one.any() else ""
        raise InputError(
            field,
            f"on the 0-255 scale (pixel_scale 'byte') must hold integers, but {first(fractional)}: round the "
            f"pixels{other}.",
        )
    return array / 255.0


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
