"""Every kind of PNG a browser or an image editor writes is read as the same digit."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from service.engine.images import decode_image

SHAPE = (28, 28)


@pytest.fixture(scope="module")
def digit() -> np.ndarray:
    """Grey levels [28, 28] in [0, 1], bright = ink, with anti-aliased edges."""
    yy, xx = np.mgrid[:28, :28]
    ring = np.abs(np.hypot(yy - 14, xx - 14) - 7)
    return np.clip(2.0 - ring, 0, 1).round(3)


def png(image: Image.Image, **options) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return base64.b64encode(buffer.getvalue()).decode()


def read(text: str) -> np.ndarray:
    return decode_image(text, "images[0]", SHAPE).reshape(SHAPE)


def bytes_(values: np.ndarray) -> np.ndarray:
    return np.round(255 * values).astype(np.uint8)


def test_greyscale_8_and_16_bit(digit):
    assert np.allclose(read(png(Image.fromarray(bytes_(digit), "L"))), digit, atol=1 / 255)
    sixteen = Image.fromarray(np.round(65535 * digit).astype(np.uint16))
    assert np.allclose(read(png(sixteen)), digit, atol=1e-4)  # not every non-zero pixel at 1


def test_rgb_and_opaque_rgba_are_read_by_luminance(digit):
    grey = bytes_(digit)
    rgb = np.stack([grey] * 3, -1)
    assert np.allclose(read(png(Image.fromarray(rgb, "RGB"))), digit, atol=1 / 255)
    opaque = np.concatenate([rgb, np.full((28, 28, 1), 255, np.uint8)], -1)
    assert np.allclose(read(png(Image.fromarray(opaque, "RGBA"))), digit, atol=1 / 255)  # not all ink


def test_strokes_drawn_on_a_transparent_canvas_are_read_from_alpha(digit):
    black = np.zeros((28, 28, 3), np.uint8)  # what a browser canvas holds: black strokes, alpha anti-aliased
    drawn = np.concatenate([black, bytes_(digit)[..., None]], -1)
    assert np.allclose(read(png(Image.fromarray(drawn, "RGBA"))), digit, atol=1 / 255)
    la = np.stack([np.zeros((28, 28), np.uint8), bytes_(digit)], -1)
    assert np.allclose(read(png(Image.fromarray(la, "LA"))), digit, atol=1 / 255)


def test_a_trns_colour_key_keeps_grey_levels(digit):
    keyed = read(png(Image.fromarray(bytes_(digit), "L"), transparency=0))  # black background keyed out
    assert np.allclose(keyed, digit, atol=1 / 255)
    dark_ink = read(png(Image.fromarray(bytes_(1 - digit), "L"), transparency=255))  # white background keyed out
    assert np.allclose(dark_ink, digit, atol=1 / 255)


def test_palette_and_one_bit_images(digit):
    binary = (digit > 0.5).astype(float)
    palette = Image.fromarray(bytes_(binary), "L").convert("P")
    assert np.allclose(read(png(palette)), binary)
    one_bit = Image.fromarray(bytes_(binary), "L").convert("1")
    assert np.allclose(read(png(one_bit)), binary)
    keyed = Image.fromarray(bytes_(binary), "L").convert("P")
    background = keyed.getpixel((0, 0))
    assert np.allclose(read(png(keyed, transparency=background)), binary)
