"""Images in and out: parsing client pixels, binarizing them, drawing PNG grids."""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
from PIL import Image, UnidentifiedImageError


class InputError(ValueError):
    """A client value that cannot be used; `field` names where it is, the message says the fix."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def decode_png(text: str, field: str, shape: tuple[int, int]) -> np.ndarray:
    """A base64 PNG (optionally a data: URL) of a greyscale image -> float pixels in [0, 1]."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise InputError(field, f"is not valid base64 ({error}); send a base64-encoded PNG.") from error
    unreadable = InputError(field, "is not a readable PNG; send a base64-encoded PNG of a greyscale image.")
    try:
        image = Image.open(io.BytesIO(raw), formats=["PNG"])
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise unreadable from error
    if image.size != (shape[1], shape[0]):  # read from the header, before any pixel is decoded
        raise InputError(field, f"is a {image.size[0]}x{image.size[1]} PNG; send {shape[1]}x{shape[0]} pixels.")
    try:
        image.load()
    except (OSError, ValueError) as error:
        raise unreadable from error
    if image.mode in ("RGBA", "LA") or "transparency" in image.info:
        # Drawn strokes on a transparent canvas: use the alpha channel as ink.
        pixels = np.asarray(image.convert("RGBA"), dtype=np.float64)[..., 3]
    else:
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    return (pixels / 255.0).reshape(-1)


def parse_pixels(values, field: str, shape: tuple[int, int], scale: str) -> np.ndarray:
    """784 numbers or 28x28 nested lists, in [0, 1] or 0-255 -> float pixels in [0, 1]."""
    size = shape[0] * shape[1]
    try:
        array = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError, OverflowError) as error:
        raise InputError(field, f"must be {size} numbers or {shape[0]}x{shape[1]} nested lists of numbers.") from error
    if array.shape not in ((size,), shape):
        raise InputError(
            field, f"has shape {list(array.shape)}; send {size} numbers or {shape[0]} rows of {shape[1]} numbers."
        )
    if not np.isfinite(array).all():
        raise InputError(field, "contains NaN or infinite values; send finite pixel values.")
    if scale == "auto":
        scale = "byte" if array.max() > 1.0 else "unit"
    if scale == "byte":
        if array.min() < 0 or array.max() > 255 or not np.all(array == np.round(array)):
            raise InputError(field, "on the 0-255 scale must hold integers from 0 to 255.")
        return array.reshape(-1) / 255.0
    if array.min() < 0 or array.max() > 1:
        raise InputError(field, "on the unit scale must lie in [0, 1]; use pixel_scale 'byte' for 0-255 values.")
    return array.reshape(-1)


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


def png_grid(images: np.ndarray, columns: int, shape: tuple[int, int], scale: int = 2) -> bytes:
    """Tile images [N, 784] in [0, 1] (ink = 1) as black on white into PNG bytes."""
    rows_of_tiles = -(-len(images) // columns)
    h, w = shape
    canvas = np.zeros((rows_of_tiles * (h + 2), columns * (w + 2)))
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        canvas[r * (h + 2) + 1 : r * (h + 2) + 1 + h, c * (w + 2) + 1 : c * (w + 2) + 1 + w] = image.reshape(h, w)
    picture = Image.fromarray(np.round(255 * (1 - canvas)).astype(np.uint8), mode="L")
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
