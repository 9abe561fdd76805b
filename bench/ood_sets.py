"""Images that are not MNIST digits, made here from nothing but a seed and the system's fonts: grey
images [N, 784] in [0, 1], bright = ink, as the service takes them. The sets bench.ood reports:
- blank: all-dark pages, and near-blank ones with 1-12 scattered ink pixels or one small dot;
- strokes: one to three pen strokes (lines and curves 1.5-3 px wide) anywhere in the field;
- inverted: MNIST digits with their polarity reversed (1 - pixel);
- noise: independent pixels at ink rates 0.02-0.5, and blurred blobs;
- letters, and glyphs (punctuation, symbols, Greek letters, outlined or filled shapes): printed, then
  prepared as MNIST digits were (20x20 box, centre of mass in the middle), so that only shape differs;
- reshaped: test digits made into no digit by the critic's reshapings (mirrored, upside down, turned,
  halved or overlaid with another, reversed in polarity), from digits the critic never saw;
- written letters: Latin letters drawn with a round pen along the strokes of eight Hershey vector fonts
  (letters that look like a digit when written left out), slanted, turned and prepared the same way.
Letters and glyphs come in two font families (`FONT_FAMILIES`): the first was used while choosing the
method, the second was not looked at until the report.
"""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from service.engine.pixels import prepare_mnist
from training.outliers import shrink_to_field

SHAPE = (28, 28)
SIZE = SHAPE[0] * SHAPE[1]
FONT_DIR = Path("/usr/share/fonts")
FONT_FAMILIES = {"design": "DejaVu", "held_out": "Liberation"}
LETTERS = string.ascii_letters
GLYPHS = "#$%&*+<=>?@[]{}~^/\\|!;:()" + "αβγδεζηθλμξπρσφψωΔΘΛΞΠΣΦΨΩ" + "★●■▲◆♠♣♥♦☺⊕⊗∞∑∫√"
STROKE_FONTS = (  # Hershey-Fonts' distinct faces, one name each; its Times imitations (times*, and
    # rowmant and greekc, which share their strokes) are left out, Liberation Serif being Times' metric twin
    "cursive", "futural", "futuram", "scriptc", "gothiceng", "gothicger", "gothicita", "greek",
)  # fmt: skip
STROKE_CHARACTERS = "".join(c for c in string.ascii_letters if c not in "IlOoqgZzb")  # written, these are digits
STROKE_LEFT_OUT = {  # where a letter is drawn like a digit, or stands for one that is
    "greek": "iQqJv",  # ι (a 1), Θ, ϑ and two symbols
    "cursive": "Q",  # a script Q is a 2
    "scriptc": "Q",
}
STROKE_CANVAS = 200  # pixels a side; the letter's larger side is drawn half that


def fonts(family: str) -> list[Path]:
    """The TrueType files of a font family on this machine (empty when it has none)."""
    return sorted(p for p in FONT_DIR.rglob("*.ttf") if p.name.startswith(family))


def blank(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = np.zeros((n, SIZE))
    for i in range(n):
        kind = i % 3
        if kind == 1:  # scattered pixels
            images[i, rng.choice(SIZE, size=rng.integers(1, 13), replace=False)] = 1.0
        elif kind == 2:  # one small dot
            canvas = Image.new("L", (28, 28))
            cx, cy, r = *rng.uniform(4, 24, size=2), rng.uniform(0.8, 2.5)
            ImageDraw.Draw(canvas).ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
            images[i] = np.asarray(canvas, dtype=np.float64).reshape(-1) / 255.0
    return images


def _draw(draw_fn, rng: np.random.Generator, scale: int = 4) -> np.ndarray:
    """Draw at `scale` times the resolution, then shrink with anti-aliasing (grey edges, as MNIST's)."""
    canvas = Image.new("L", (28 * scale, 28 * scale))
    draw_fn(ImageDraw.Draw(canvas), rng, scale)
    small = canvas.resize((28, 28), Image.LANCZOS)
    return np.asarray(small, dtype=np.float64).reshape(-1) / 255.0


def _strokes(draw: ImageDraw.ImageDraw, rng: np.random.Generator, scale: int) -> None:
    for _ in range(rng.integers(1, 4)):
        width = int(rng.uniform(1.5, 3.0) * scale)
        start, control, end = rng.uniform(1, 27, size=(3, 2)) * scale
        t = np.linspace(0, 1, 24)[:, None]
        curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end if rng.random() < 0.6 else None
        points = [tuple(p) for p in curve] if curve is not None else [tuple(start), tuple(end)]
        draw.line(points, fill=255, width=width, joint="curve")


def strokes(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([_draw(_strokes, rng) for _ in range(n)])


def reshaped(digits: np.ndarray, labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n non-digits [n, 784] in [0, 1] made from grey digits [N, 784] in [0, 1] of classes `labels` [N] by
    the critic's own reshapings (training.outliers.reshaped_digits)."""
    from training.outliers import reshaped_digits

    return reshaped_digits(digits * 255.0, labels, n, np.random.default_rng(seed))


def stroke_glyphs() -> list[list[np.ndarray]]:
    """Every STROKE_CHARACTERS glyph of the STROKE_FONTS (less STROKE_LEFT_OUT), each a list of
    strokes [P, 2] (x, y down)."""
    try:
        from HersheyFonts import HersheyFonts
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "Hershey-Fonts is missing; install the bench extra (pip install -e '.[bench]')"
        ) from error

    glyphs = []
    for name in STROKE_FONTS:
        font = HersheyFonts(load_default_font=name)
        for character, glyph in sorted(font.all_glyphs.items()):
            strokes = [np.asarray(stroke, dtype=np.float64) for stroke in glyph.strokes if len(stroke)]
            if character in STROKE_CHARACTERS and character not in STROKE_LEFT_OUT.get(name, "") and strokes:
                glyphs.append(strokes)
    return glyphs


def written(n: int, seed: int) -> np.ndarray:
    """n letters [n, 784] in [0, 1] drawn with a round pen along Hershey strokes, slanted, turned and
    with pens of random width, prepared as the critic's printed outliers are (training.outliers.prepared)."""
    from training.outliers import prepared

    rng = np.random.default_rng(seed)
    glyphs = stroke_glyphs() if n else []
    images = []
    while len(images) < n:
        strokes = glyphs[rng.integers(len(glyphs))]
        points = np.concatenate(strokes)
        low, high = points.min(axis=0), points.max(axis=0)
        scale = STROKE_CANVAS / 2 / max(float((high - low).max()), 1.0)
        slant, pen = float(rng.uniform(-0.3, 0.3)), int(rng.integers(8, 19))
        canvas = Image.new("L", (STROKE_CANVAS, STROKE_CANVAS))
        draw = ImageDraw.Draw(canvas)
        for stroke in strokes:
            xy = (stroke - (low + high) / 2) * scale
            xy[:, 0] -= slant * xy[:, 1]
            xy += STROKE_CANVAS / 2
            draw.line([tuple(p) for p in xy], fill=255, width=pen, joint="curve")
            for x, y in xy:  # round ends and corners, as a pen leaves them
                draw.ellipse([x - pen / 2, y - pen / 2, x + pen / 2, y + pen / 2], fill=255)
        image = prepared(canvas, rng)
        if image is not None:
            images.append(image)
    return np.stack(images) if images else np.zeros((0, SIZE))


def noise(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = np.empty((n, SIZE))
    for i in range(n):
        if i % 2 == 0:  # independent pixels
            images[i] = rng.random(SIZE) < rng.choice([0.02, 0.05, 0.1, 0.2, 0.5])
        else:  # blurred blobs, thresholded smooth noise
            field = Image.fromarray(np.uint8(255 * rng.random((28, 28))), mode="L")
            smooth = np.asarray(field.filter(ImageFilter.GaussianBlur(rng.uniform(1.0, 2.5))), dtype=np.float64)
            images[i] = (smooth > np.quantile(smooth, rng.uniform(0.6, 0.9))).reshape(-1)
    return images


def _glyph(text: str, font_path: Path, rng: np.random.Generator) -> np.ndarray | None:
    font = ImageFont.truetype(str(font_path), size=int(rng.integers(48, 80)))
    if font.getmask(text).getbbox() is None:  # the font has no such glyph
        return None
    canvas = Image.new("L", (128, 128))
    ImageDraw.Draw(canvas).text((64, 64), text, fill=255, font=font, anchor="mm")
    small = shrink_to_field(np.asarray(canvas, dtype=np.float64) / 255.0, SHAPE)
    return None if small is None else prepare_mnist(small.reshape(-1), SHAPE)


def _rendered(alphabet: str, family: str, n: int, seed: int) -> np.ndarray:
    paths = fonts(family)
    if not paths:
        raise FileNotFoundError(f"No {family} fonts under {FONT_DIR}: install fonts-dejavu and fonts-liberation.")
    rng = np.random.default_rng(seed)
    images = []
    while len(images) < n:
        image = _glyph(str(rng.choice(list(alphabet))), paths[rng.integers(len(paths))], rng)
        if image is not None and image.max() > 0:
            images.append(image)
    return np.stack(images)


def letters(n: int, seed: int, family: str) -> np.ndarray:
    return _rendered(LETTERS, family, n, seed)


def _shapes(draw: ImageDraw.ImageDraw, rng: np.random.Generator, scale: int) -> None:
    (x0, y0), (x1, y1) = np.sort(rng.uniform(4, 24, size=(2, 2)), axis=0) * scale
    width = int(rng.uniform(1.5, 3.0) * scale)
    kind = rng.integers(4)
    filled = {"fill": 255} if rng.random() < 0.5 else {"outline": 255, "width": width}  # a solid blob, or its outline
    if kind == 3:  # a cross
        draw.line([(x0, y0), (x1, y1)], fill=255, width=width)
        draw.line([(x0, y1), (x1, y0)], fill=255, width=width)
    else:  # an ellipse, a rectangle or a triangle
        corners = [(x0, y0), (x1, y1)] if kind < 2 else [(x0, y1), ((x0 + x1) / 2, y0), (x1, y1)]
        (draw.ellipse, draw.rectangle, draw.polygon)[kind](corners, **filled)


def glyphs(n: int, seed: int, family: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rendered = _rendered(GLYPHS, family, n - n // 4, seed)
    shapes = np.stack([prepare_mnist(_draw(_shapes, rng), SHAPE) for _ in range(n // 4)])
    return np.concatenate([rendered, shapes])


def ood_sets(n: int, seed: int, digits: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Every set, n images each, by the name bench.ood reports; `digits` [>= n, 784] grey MNIST digits, of
    classes `labels`, to invert and reshape."""
    design, held_out = FONT_FAMILIES["design"], FONT_FAMILIES["held_out"]
    return {
        "blank": blank(n, seed),
        "strokes": strokes(n, seed + 1),
        "inverted": 1.0 - digits[:n],  # polarity reversed
        "noise": noise(n, seed + 2),
        f"letters ({design})": letters(n, seed + 3, design),
        f"glyphs ({design})": glyphs(n, seed + 4, design),
        f"letters ({held_out}, held out)": letters(n, seed + 13, held_out),
        f"glyphs ({held_out}, held out)": glyphs(n, seed + 14, held_out),
        "reshaped digits": reshaped(digits, labels, n, seed + 15),
        "written letters (Hershey, held out)": written(n, seed + 16),
    }
