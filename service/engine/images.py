"""Images in and out: image files (PNG, JPEG, WebP, GIF, BMP, TIFF) read into arrays (whatever bytes
arrive, an array or an InputError naming the field), and PNG grids of samples drawn. Pixels sent as
numbers are service.engine.pixels'.

Pixels are bright where there is ink (1 or 255), dark elsewhere, as in MNIST. Without a PixelBudget
an image must have the model's shape; with one (preprocess 'mnist') it may have any size within the
budget, and service.engine.pixels brings it to the model's field."""

from __future__ import annotations

import base64
import binascii
import io
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin

from service.failures import InputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The image files read, by Pillow's name and the bytes they begin with (a WebP file: RIFF, 4 bytes, WEBP).
# Pillow reads more formats, some through outside programs (EPS through Ghostscript): those are not opened.
SIGNATURES = {
    "PNG": (PNG_SIGNATURE,),
    "JPEG": (b"\xff\xd8\xff",),
    "WEBP": (b"RIFF",),
    "GIF": (b"GIF87a", b"GIF89a"),
    "BMP": (b"BM",),
    "TIFF": (b"II*\x00", b"MM\x00*"),
}
NAMES = {"WEBP": "WebP", "MPO": "JPEG"}  # as people write them (a JPEG with a second picture opens as MPO)
ACCEPTED = "PNG, JPEG, WebP, GIF, BMP or TIFF"
# what a size error adds for a model of MNIST's digits (runtime.Model.offers_mnist); others end at the size
ANY_SIZE = ', or add "preprocess": "mnist" to have an image of another size prepared as MNIST\'s digits were'


MAX_IMAGE_SIDE = 4096  # pixels on a side of one image of any size: the operator's bound is the request's pixels


class PixelBudget:
    """How large one request's images of any size may be: at most MAX_IMAGE_SIDE pixels on a side and
    `total` pixels together (setting max_request_pixels). A PNG's size is read from its header, so a
    small file that would decode to a huge image is refused before it is decoded."""

    def __init__(self, total: int, side: int = MAX_IMAGE_SIDE):
        self.side = side
        self.total = total
        self.used = 0

    def spend(self, field: str, height: int, width: int, what: str) -> None:
        """Count an image of height x width pixels, described as `what` ("is a 300x200 PNG")."""
        if max(height, width) > self.side:
            raise InputError(field, f"{what}; an image may be at most {self.side} pixels on a side: scale it down.")
        self.used += height * width
        if self.used > self.total:
            raise InputError(
                field,
                f"{what}, which brings the request to {self.used} pixels; a request may hold at most {self.total} "
                "(setting CVAE_MAX_REQUEST_PIXELS): send fewer or smaller images.",
            )


def decode_image(
    text: str, field: str, shape: tuple[int, int], budget: PixelBudget | None = None, any_size: str = ANY_SIZE
) -> np.ndarray:
    """A base64 image file (PNG, JPEG, WebP, GIF, BMP or TIFF; optionally a data: URL; line breaks
    allowed) -> float pixels in [0, 1] of its grey levels: [784] of `shape`, or with a budget [H, W] of
    any size within it. The first frame of an animation is read; an EXIF orientation is applied.
    Whatever the bytes, the only error is an InputError naming `field`."""
    raw = _base64(text, field)
    try:
        with warnings.catch_warnings():  # Pillow warns of large images; the size is judged below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw), formats=list(SIGNATURES))
    except Image.DecompressionBombError as error:  # more pixels than Pillow decodes at all
        if size := _header_size(raw):
            _judge_size(field, *size, "PNG", shape, budget, any_size)
        limit = f"at most {budget.side} pixels on a side" if budget else f"{shape[1]}x{shape[0]} pixels"
        raise InputError(field, f"is an image of more pixels than can be decoded safely; send {limit}.") from error
    except Exception as error:  # Pillow raises many kinds for a malformed file (see _unreadable)
        raise _unreadable(field, error, raw) from error
    name = NAMES.get(image.format, image.format)
    _judge_size(field, *image.size, name, shape, budget, any_size)  # read from the header, before any pixel is decoded
    try:
        image.load()
        image = ImageOps.exif_transpose(image)  # a phone's photo is stored turned, and says so
        luminance, alpha = _planes(image)
    except Exception as error:
        raise _unreadable(field, error, raw) from error
    pixels = _ink(luminance, alpha)
    return pixels if budget is not None else pixels.reshape(-1)


# Line breaks and spaces are not base64 but its writers add them: RFC 2045 wraps at 76 columns
_WRAPPING = str.maketrans("", "", " \t\r\n")


def _base64(text: str, field: str) -> bytes:
    text = text.strip()
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text.translate(_WRAPPING), validate=True)
    except (binascii.Error, ValueError) as error:
        raise InputError(field, f"is not valid base64 ({error}); send a base64-encoded image file.") from error


def _header_size(raw: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, or None when the bytes do not start as a PNG."""
    if raw[:8] != PNG_SIGNATURE or raw[12:16] != b"IHDR" or len(raw) < 24:
        return None
    return struct.unpack(">II", raw[16:24])


def _judge_size(
    field: str, width: int, height: int, name: str, shape: tuple[int, int], budget: PixelBudget | None, any_size: str
) -> None:
    if budget is not None:
        budget.spend(field, height, width, f"is a {width}x{height} {name}")
    elif (height, width) != shape:
        raise InputError(field, f"is a {width}x{height} {name}; send {shape[1]}x{shape[0]} pixels{any_size}.")


def _format_of(raw: bytes) -> str | None:
    """The format an image file's first bytes announce, as people write it; None for none read here."""
    for format, signatures in SIGNATURES.items():
        if raw.startswith(signatures) and (format != "WEBP" or raw[8:12] == b"WEBP"):
            return NAMES.get(format, format)
    return None


def _unreadable(field: str, error: Exception, raw: bytes) -> InputError:
    """The refusal of an image file that Pillow could not decode.

    A malformed file raises SyntaxError, ValueError, OSError, struct.error, IndexError, EOFError and
    more, by where the decoder stumbled: every one of them means the bytes are not a readable image of
    the format they begin as, or of none read here. A compressed text or colour-profile chunk of a PNG
    that expands beyond Pillow's limits is a decompression bomb, and is called one."""
    said = str(error)
    if "MAX_TEXT_CHUNK" in said:
        return InputError(
            field,
            f"has a compressed text or colour-profile chunk that expands beyond {PngImagePlugin.MAX_TEXT_CHUNK} "
            "bytes, more than can be decoded safely; send the PNG without its metadata (save it again).",
        )
    if "MAX_TEXT_MEMORY" in said:
        return InputError(
            field,
            f"has text chunks of more than {PngImagePlugin.MAX_TEXT_MEMORY} bytes together, more than can be "
            "decoded safely; send the PNG without its metadata (save it again).",
        )
    if name := _format_of(raw):
        return InputError(field, f"is not a readable {name}; send a base64-encoded PNG of a greyscale image.")
    return InputError(
        field,
        f"is not an image file of a format read here ({ACCEPTED}); send a base64-encoded PNG of a greyscale "
        "image, or a file of another of these formats.",
    )


SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I")


def grey_levels(image: Image.Image) -> np.ndarray:
    """A decoded image as grey levels [H, W] in [0, 1].

    - 16-bit greyscale is scaled by 65535, not clipped at 255;
    - a transparent background (most pixels transparent, by an alpha channel or a tRNS colour key)
      means the drawing is in what is opaque: ink is the alpha where alpha has grey levels (strokes
      drawn on a transparent canvas), else the opaque pixels' contrast with the transparent colour,
      which keeps their grey levels;
    - an opaque image is read by its luminance, whatever its alpha channel says.
    """
    return _ink(*_planes(image))


def _planes(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Pillow's part of grey_levels: luminance [H, W] in [0, 1], and alpha [H, W] where the image has
    transparency (None otherwise)."""
    if image.mode in SIXTEEN_BIT:
        return np.clip(np.asarray(image, dtype=np.float64) / 65535.0, 0.0, 1.0), None
    if image.mode not in ("RGBA", "LA", "PA") and "transparency" not in image.info:
        return np.asarray(image.convert("L"), dtype=np.float64) / 255.0, None
    rgba = image.convert("RGBA")  # RGBA -> L reads the colour and leaves the alpha, as RGB -> L does
    return np.asarray(rgba.convert("L"), dtype=np.float64) / 255.0, np.asarray(rgba, dtype=np.float64)[..., 3] / 255.0


def _ink(luminance: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """The ink [H, W] of an image's luminance and alpha (see grey_levels)."""
    if alpha is None:
        return luminance
    transparent = alpha < 0.5
    if transparent.mean() <= 0.5:  # an opaque picture: its alpha is not the drawing
        return luminance
    if np.any((alpha > 0.02) & (alpha < 0.98)):  # anti-aliased strokes on a transparent canvas
        return alpha
    contrast = np.abs(luminance - luminance[transparent].mean()) * alpha  # a colour key: alpha is 0 or 1
    return contrast if contrast.max() >= 0.2 else alpha


def png_grid(images: np.ndarray, columns: int, shape: tuple[int, int], scale: int = 2) -> bytes:
    """Tile images [N, 784] in [0, 1] (ink = 1) into PNG bytes, drawn black on white for viewing: the
    reverse of what the scoring endpoints take (bright = ink), so a tile sent back needs invert."""
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
