"""Whatever bytes arrive as an image, the answer is a 422 naming the image and the fix; every log
line of a request, an unexpected error's traceback included, carries the request's id."""

import base64
import json
import logging
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import send_partial_body

from service.app import create_app
from service.engine.images import PixelBudget, decode_image
from service.failures import InputError
from service.schemas import DIGIT_PNG
from service.settings import Settings
from service.telemetry import JsonFormatter, RequestIdFilter

SHAPE = (28, 28)
SIGNATURE = b"\x89PNG\r\n\x1a\n"
ENDPOINTS = ("/v1/classify", "/v1/log-likelihood", "/v1/encode")


def chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    """One PNG chunk: length, type, data and its CRC (the right one unless `crc` is given)."""
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc & 0xFFFFFFFF)


def ihdr(width: int, height: int, depth: int = 8, colour: int = 0, interlace: int = 0) -> bytes:
    return chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace))


def png(*chunks: bytes) -> str:
    return base64.b64encode(SIGNATURE + b"".join(chunks) + chunk(b"IEND", b"")).decode()


def rows(values: bytes, width: int = 28, height: int = 28) -> bytes:
    """8-bit scanlines, each with filter type 0, of `values` repeated."""
    line = (values * width)[:width]
    return (b"\x00" + line) * height


def palette_with_a_long_trns() -> str:
    """A palette PNG of 2 colours whose tRNS gives 300 alphas: more than the palette, and than 256."""
    return png(
        ihdr(28, 28, colour=3),
        chunk(b"PLTE", bytes(6)),
        chunk(b"tRNS", bytes(300)),
        chunk(b"IDAT", zlib.compress(rows(b"\x00\x01"))),
    )


def a_chunk_type_that_is_not_letters() -> str:
    """A greyscale PNG whose image data is split in two IDATs around a chunk of type b'ab d'."""
    noise = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    data = zlib.compress(b"".join(b"\x00" + row.tobytes() for row in noise))
    return png(ihdr(28, 28), chunk(b"IDAT", data[:100]), chunk(b"ab d", b"xx"), chunk(b"IDAT", data[100:]))


def a_text_bomb() -> str:
    """A 28x28 PNG whose zTXt chunk of 8 kB expands to 8 MB."""
    text = chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(bytes(8 << 20), 9))
    return png(ihdr(28, 28), text, chunk(b"IDAT", zlib.compress(rows(b"\x00"))))


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("image", [palette_with_a_long_trns, a_chunk_type_that_is_not_letters])
def test_a_malformed_png_is_a_422_naming_the_image(client, endpoint, image):
    response = client.post(endpoint, json={"images": [DIGIT_PNG, image()]})
    assert response.status_code == 422
    problem = response.json()["problems"][0]
    assert problem == {
        "field": "images[1]",
        "message": "is not a readable PNG; send a base64-encoded PNG of a greyscale image.",
    }


def test_a_decompression_bomb_is_called_too_large_with_the_limit(client):
    response = client.post("/v1/classify", json={"images": [a_text_bomb()]})
    assert response.status_code == 422
    message = response.json()["problems"][0]["message"]
    assert "expands beyond 1048576 bytes" in message and "readable" not in message
    huge = png(ihdr(2**31 - 1, 2**31 - 1), chunk(b"IDAT", zlib.compress(b"")))  # beyond what Pillow opens
    for budget, limit in ((None, "send 28x28 pixels"), (PixelBudget(4096**2), "at most 4096 pixels on a side")):
        with pytest.raises(InputError, match=limit) as refused:
            decode_image(huge, "images[0]", SHAPE, budget)
        assert "is a 2147483647x2147483647 PNG" in refused.value.message


def test_base64_wrapped_at_76_columns_reads_as_it_does_unwrapped(client):
    wrapped = "\n".join(DIGIT_PNG[i : i + 76] for i in range(0, len(DIGIT_PNG), 76)) + "\n"
    assert np.array_equal(decode_image(wrapped, "images[0]", SHAPE), decode_image(DIGIT_PNG, "images[0]", SHAPE))
    body = {"num_samples": 20, "seed": 3}
    answers = [client.post("/v1/classify", json={"images": [text], **body}) for text in (DIGIT_PNG, wrapped)]
    assert answers[0].status_code == answers[1].status_code == 200
    assert answers[0].json()["results"] == answers[1].json()["results"]
    url = "data:image/png;base64,\r\n" + wrapped.replace("\n", "\r\n")
    assert np.array_equal(decode_image(url, "images[0]", SHAPE), decode_image(DIGIT_PNG, "images[0]", SHAPE))
    with pytest.raises(InputError, match="is not valid base64"):
        decode_image(DIGIT_PNG[:40] + "*" + DIGIT_PNG[40:], "images[0]", SHAPE)


@pytest.mark.parametrize(
    ("endpoint", "field"),
    [("/v1/classify", "tolerance"), ("/v1/log-likelihood", "threshold"), ("/v1/classify", "min_probability")],
)
def test_a_number_beyond_float_range_is_refused_naming_its_field(client, endpoint, field):
    body = f'{{"images": ["{DIGIT_PNG}"], "{field}": 1e400}}'
    response = client.post(endpoint, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    (problem,) = response.json()["problems"]
    assert problem["field"] == field and "finite number" in problem["message"]
    nan = '{"z": [[NaN]]}'
    response = client.post("/v1/samples", content=nan, headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and response.json()["problems"][0]["field"] == "z[0][0]"


def test_an_unexpected_error_logs_its_traceback_under_the_request_id(client, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("a fault inside the service")

    monkeypatch.setattr("service.engine.inference.decode_image", broken)
    with caplog.at_level(logging.INFO):
        response = client.post("/v1/classify", json={"images": [DIGIT_PNG]}, headers={"X-Request-ID": "fault-7"})
    assert response.status_code == 500 and response.headers["x-request-id"] == "fault-7"
    assert "fault-7" in response.json()["error"]
    (traceback,) = [r for r in caplog.records if r.exc_info]
    line = json.loads(JsonFormatter().format(traceback))
    assert line["request_id"] == "fault-7" and "a fault inside the service" in line["exception"]
    access = [r for r in caplog.records if r.name == "cvae.access" and r.request_id == "fault-7"]
    assert [r.status for r in access] == [500]


def test_every_line_logged_during_a_request_carries_its_id(client, monkeypatch, caplog):
    import service.engine.inference

    real = service.engine.inference.decode_image

    def logging_decode(*args, **kwargs):
        logging.getLogger("cvae.test").warning("decoding an image")
        return real(*args, **kwargs)

    monkeypatch.setattr("service.engine.inference.decode_image", logging_decode)
    caplog.handler.addFilter(RequestIdFilter())  # what logs.configure puts on the service's handler
    with caplog.at_level(logging.INFO):
        client.post("/v1/classify", json={"images": [DIGIT_PNG], "num_samples": 4}, headers={"X-Request-ID": "id-9"})
        logging.getLogger("cvae.test").warning("outside any request")
    inside, outside = [r for r in caplog.records if r.name == "cvae.test"]
    assert inside.request_id == "id-9" and not hasattr(outside, "request_id")


def test_a_client_that_leaves_mid_body_is_logged_as_closed_not_as_an_error(shipped_model, caplog):
    app = create_app(Settings(model_dir=shipped_model))
    with caplog.at_level(logging.INFO):
        sent = send_partial_body(app, "/v1/classify", b'{"images": [', [(b"x-request-id", b"gone-1")])
    assert sent == []  # nothing is answered to a client that is gone
    (line,) = [r for r in caplog.records if r.name == "cvae.access"]
    assert line.status == 499 and line.request_id == "gone-1" and "client closed" in line.error
    assert not [r for r in caplog.records if r.exc_info]
    metrics = app.state.metrics
    assert metrics.requests.labels("/v1/classify", "POST", "499")._value.get() == 1
    assert not [s for s in metrics.errors.collect()[0].samples if s.name.endswith("_total")]


# ---- the decoder under fuzzing: structured PNGs, whatever their fields ----------------------------

CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # samples per pixel of each PNG colour type
DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
CHUNK_TYPES = [b"PLTE", b"tRNS", b"IDAT", b"IHDR", b"IEND", b"zTXt", b"iTXt", b"iCCP", b"acTL", b"fcTL", b"gAMA"]
LIMIT = 48  # the side and the pixels of the fuzzed budget: PixelBudget(LIMIT**2, side=LIMIT)


@st.composite
def structured_pngs(draw) -> bytes:
    """A PNG signature and IHDR of random fields (mostly a valid colour type and bit depth), optional
    PLTE and tRNS of random lengths, image data of zlib-compressed scanlines of random bytes or of
    random bytes, split into IDATs, random chunks (known types or any 4 bytes) anywhere, CRCs right
    or wrong, and maybe a truncation. Hypothesis draws the fields; a generator seeded by it decides
    how often each fault occurs (Hypothesis alone would pick the first branch of most choices)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    width, height = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    if rng.random() < 0.1:
        width, height = draw(st.sampled_from([(0, 5), (2**31 - 1, 1), (1, 2**32 - 1), (5000, 5000), (40000, 40000)]))
    colour = draw(st.sampled_from(sorted(CHANNELS)))
    depth = draw(st.sampled_from(DEPTHS[colour]))
    if rng.random() < 0.1:  # any colour type and depth, valid or not
        colour, depth = draw(st.integers(0, 255)), draw(st.integers(0, 255))
    interlace = draw(st.sampled_from([0, 1, 2])) if rng.random() < 0.5 else 0
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    wrong_crcs = rng.random() < 0.2

    def part(kind: bytes, data: bytes) -> bytes:
        return chunk(kind, data, int(rng.integers(2**32)) if wrong_crcs and rng.random() < 0.5 else None)

    chunks = [part(b"IHDR", header)]
    if rng.random() < (0.9 if colour == 3 else 0.2):
        entries = draw(st.integers(0, 300))
        chunks.append(part(b"PLTE", rng.integers(0, 256, 3 * entries + (rng.random() < 0.1), np.uint8).tobytes()))
    if rng.random() < 0.4:
        chunks.append(part(b"tRNS", draw(st.binary(max_size=300))))
    if rng.random() < 0.75:  # scanlines of the header's size: a filter byte (0-4, or beyond), then samples
        row = -(-min(width, 64) * min(depth, 16) * CHANNELS.get(colour, 1) // 8)
        lines = rng.integers(0, 256, (min(height, 64), row + 1), dtype=np.uint8)
        lines[:, 0] = rng.integers(0, 5 if rng.random() < 0.9 else 256, len(lines))
        data = lines.tobytes()
        data = zlib.compress(data[: rng.integers(len(data) + 1)] if rng.random() < 0.2 else data)
    else:
        data = rng.integers(0, 256, draw(st.integers(0, 600)), dtype=np.uint8).tobytes()
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=3)))
    for start, end in zip([0, *cuts], [*cuts, len(data)]):
        chunks.append(part(b"IDAT", data[start:end]))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(CHUNK_TYPES) | st.binary(min_size=4, max_size=4))
        chunks.insert(draw(st.integers(1, len(chunks))), part(kind, draw(st.binary(max_size=64))))
    raw = SIGNATURE + b"".join(chunks) + part(b"IEND", b"")
    return raw[: rng.integers(8, len(raw))] if rng.random() < 0.15 else raw


@settings(max_examples=3000, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(raw=structured_pngs(), any_size=st.booleans())
def test_the_png_decoder_returns_pixels_or_an_input_error_whatever_the_bytes(raw, any_size):
    budget = PixelBudget(LIMIT**2, side=LIMIT) if any_size else None
    try:
        pixels = decode_image(base64.b64encode(raw).decode(), "images[0]", SHAPE, budget)
    except InputError as error:
        assert error.field == "images[0]" and error.message
        return
    assert pixels.dtype == np.float64 and np.all((pixels >= 0) & (pixels <= 1))
    if any_size:
        assert pixels.ndim == 2 and 1 <= min(pixels.shape) and max(pixels.shape) <= LIMIT
    else:
        assert pixels.shape == (784,)
