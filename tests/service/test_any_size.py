"""With preprocess 'mnist', an image of any size and aspect is prepared as MNIST's digits were; without,
it must be 28x28 and the refusal says how to send another size."""

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from service.engine.images import PixelBudget, decode_image
from service.engine.pixels import parse_pixels, polarity_warning, prepare_mnist
from service.failures import InputError

SHAPE = (28, 28)
CANVAS = (200, 280)  # (height, width) of a drawing larger than the field and not square


def png(image: np.ndarray) -> str:
    """Grey levels [H, W] in [0, 1] as a base64 PNG."""
    buffer = io.BytesIO()
    Image.fromarray(np.round(255 * image).astype(np.uint8), "L").save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def claimed_png(width: int, height: int) -> str:
    """A small PNG whose header claims width x height grey pixels: what a decompression bomb looks like
    before it is decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    raw = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    return base64.b64encode(raw).decode()


def drawn_large(digit: np.ndarray, factor: int = 7, top: int = 2, left: int = 60) -> np.ndarray:
    """A 28x28 digit [784] scaled up smoothly by `factor` and placed off-centre on a 280x200 canvas."""
    small = Image.fromarray(np.round(255 * digit.reshape(SHAPE)).astype(np.uint8), "L")
    big = np.asarray(small.resize((28 * factor, 28 * factor), Image.BILINEAR), dtype=np.float64) / 255.0
    canvas = np.zeros(CANVAS)
    canvas[top : top + big.shape[0], left : left + big.shape[1]] = big
    return canvas


def budget() -> PixelBudget:
    return PixelBudget(4096 * 4096)


def ink_box(field: np.ndarray) -> tuple[int, int]:
    """(height, width) of the pixels brighter than 0.5 in a field [784]."""
    ink = field.reshape(SHAPE) > 0.5
    rows, cols = np.nonzero(ink.any(axis=1))[0], np.nonzero(ink.any(axis=0))[0]
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def test_a_large_drawing_is_classified_as_its_28x28_original(client, images):
    """The shipped model's own digits, drawn 7 times larger off-centre on a 280x200 canvas."""
    options = {"preprocess": "mnist", "num_samples": 200, "seed": 0, "include": ["x"]}
    small = client.post("/v1/classify", json={"images": [d.reshape(SHAPE).tolist() for d in images], **options})
    large = client.post("/v1/classify", json={"images": [png(drawn_large(d)) for d in images], **options})
    assert small.status_code == 200 and large.status_code == 200, large.json()
    small, large = small.json()["results"], large.json()["results"]
    assert [r["predicted"] for r in large] == [r["predicted"] for r in small]
    for a, b in zip(small, large):  # the same scored image, within an edge pixel here and there
        assert np.mean(np.array(a["x"]) != np.array(b["x"])) < 0.05
        assert b["warnings"] == []


def test_a_large_drawing_is_area_averaged_not_point_sampled():
    stripes = np.zeros((400, 400))
    stripes[:, ::2] = 1.0  # 1-pixel stripes: every other pixel would be all ink or all background
    field = prepare_mnist(decode_image(png(stripes), "images[0]", SHAPE, budget()), SHAPE).reshape(SHAPE)
    box = field[5:23, 5:23]  # inside the 20x20 box, away from its filtered edges
    assert np.allclose(box, 0.5, atol=0.03)


@pytest.mark.parametrize(("height", "width"), [(40, 300), (400, 30)])
def test_non_square_images_keep_their_aspect_in_the_20_pixel_box(height, width):
    bar = np.zeros((height + 40, width + 40))
    bar[20:-20, 20:-20] = 1.0
    field = prepare_mnist(decode_image(png(bar), "images[0]", SHAPE, budget()), SHAPE)
    tall, wide = ink_box(field)
    assert max(tall, wide) == 20 and abs(min(tall, wide) - 20 * min(height, width) / max(height, width)) <= 1
    centre = np.argwhere(field.reshape(SHAPE) > 0.5).mean(axis=0)
    assert np.allclose(centre, 14, atol=1.0)


def test_pixel_lists_of_any_rectangular_shape(client):
    rows = np.zeros((60, 44))
    rows[10:50, 20:26] = 255  # a "1", on the 0-255 scale
    response = client.post(
        "/v1/classify", json={"images": [rows.astype(int).tolist()], "preprocess": "mnist", "include": ["x"]}
    )
    assert response.status_code == 200, response.json()
    x = np.array(response.json()["results"][0]["x"])
    assert ink_box(x)[0] == 20  # scaled into the box
    for bad, words in (([[0.0] * 30, [0.0] * 29], "rows of numbers of equal length"), ([[[0.0]]], "shape [1, 1, 1]")):
        response = client.post("/v1/classify", json={"images": [bad], "preprocess": "mnist"})
        assert response.status_code == 422 and words in response.json()["error"]
        assert response.json()["problems"][0]["field"] == "images[0]"


def test_too_large_images_are_refused_naming_the_field_and_the_limit(client):
    digit = png(np.zeros(SHAPE))
    for claimed in (claimed_png(4097, 10), claimed_png(5000, 5000), claimed_png(100_000, 100_000)):
        response = client.post("/v1/classify", json={"images": [digit, claimed], "preprocess": "mnist"})
        assert response.status_code == 422
        assert response.json()["problems"][0]["field"] == "images[1]"
        assert "4096 pixels on a side" in response.json()["error"]
    assert (
        "scale it down"
        in client.post("/v1/encode", json={"images": [claimed_png(5000, 5000)], "preprocess": "mnist"}).json()["error"]
    )
    assert client.get("/v1/model").json()["limits"]["max_image_side"] == 4096


def test_a_request_has_a_pixel_budget_judged_before_decoding():
    budget = PixelBudget(100 * 100)
    decode_image(png(np.zeros((60, 100))), "images[0]", SHAPE, budget)
    with pytest.raises(InputError, match="CVAE_MAX_REQUEST_PIXELS") as refused:
        decode_image(claimed_png(100, 60), "images[1]", SHAPE, budget)  # no pixel data: refused from the header
    assert refused.value.field == "images[1]" and "12000 pixels" in refused.value.message
    with pytest.raises(InputError, match="CVAE_MAX_REQUEST_PIXELS"):
        parse_pixels(np.zeros((100, 100)).tolist(), "images[1]", SHAPE, "unit", PixelBudget(100 * 100 - 1))


def test_without_preprocess_other_sizes_are_refused_with_the_fix(client):
    for image, said in ((png(np.zeros((56, 56))), "is a 56x56 PNG"), (np.zeros((56, 56)).tolist(), "shape [56, 56]")):
        for route in ("/v1/classify", "/v1/log-likelihood", "/v1/encode"):
            response = client.post(route, json={"images": [image]})
            assert response.status_code == 422, route
            error = response.json()["error"]
            assert said in error and ("28x28" in error or "28 rows of 28" in error)
            assert '"preprocess": "mnist"' in error


def test_the_polarity_warning_reads_the_border_of_any_size():
    drawing = np.zeros(CANVAS)
    drawing[40:160, 130:150] = 1.0  # a "1"
    assert polarity_warning(drawing, SHAPE) is None
    warning = polarity_warning(1.0 - drawing, SHAPE)
    assert warning and warning["code"] == "reversed_polarity"
    thin = np.zeros(CANVAS)
    thin[3:-3, 3:-3] = 1.0  # bright but for a 3-pixel edge: the frame is 3/28 of each side, not 3 pixels
    assert polarity_warning(thin, SHAPE)["code"] == "reversed_polarity"


def test_a_dark_on_light_drawing_warns_unless_inverted(client):
    paper = np.ones(CANVAS)
    paper[40:160, 130:150] = 0.0  # a dark "1" on white, as a browser canvas holds it
    options = {"images": [png(paper)], "preprocess": "mnist", "num_samples": 50}
    plain = client.post("/v1/classify", json=options).json()["results"][0]
    assert [w["code"] for w in plain["warnings"]] == ["reversed_polarity"]
    inverted = client.post("/v1/classify", json={**options, "invert": True}).json()["results"][0]
    assert inverted["warnings"] == [] and inverted["predicted"] == 1
