"""A refused input is told what is really wrong with it: the image formats that are read, the scale its
pixels were taken to be on and the pixel that breaks it, a pixel that is not a number; and the OpenAPI
document declares the API keys and every answer a caller can get."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from service.app import create_app
from service.engine.images import decode_image
from service.schemas import DIGIT_PNG
from service.settings import Settings

SHAPE = (28, 28)
ENCODE = {"y": 3, "binarize": "threshold"}  # deterministic: no sampling noise


def digit() -> Image.Image:
    """The example "3" of /docs as a greyscale image."""
    return Image.open(io.BytesIO(base64.b64decode(DIGIT_PNG))).convert("L")


def saved(image: Image.Image, format: str, **options) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return base64.b64encode(buffer.getvalue()).decode()


def refusal(response) -> dict:
    assert response.status_code == 422, response.text
    (problem,) = response.json()["problems"]
    return problem


# ---- (a) image files: what Pillow reads of the common formats, under the PNG's limits ----------------


@pytest.mark.parametrize(("format", "options"), [("WEBP", {"lossless": True}), ("BMP", {}), ("TIFF", {}), ("GIF", {})])
def test_a_lossless_image_file_of_any_read_format_is_answered_as_its_png(client, format, options):
    image = saved(digit(), format, **options)
    assert np.array_equal(decode_image(image, "images[0]", SHAPE), decode_image(DIGIT_PNG, "images[0]", SHAPE))
    answers = [client.post("/v1/encode", json={"images": [sent], **ENCODE}) for sent in (DIGIT_PNG, image)]
    assert answers[1].status_code == 200, answers[1].text
    assert answers[1].json()["results"] == answers[0].json()["results"]


def test_a_jpeg_is_read_not_called_an_unreadable_png(client):
    jpeg = saved(digit(), "JPEG", quality=95)
    pixels = decode_image(jpeg, "images[0]", SHAPE)
    assert np.abs(pixels - decode_image(DIGIT_PNG, "images[0]", SHAPE)).max() < 0.1  # lossy, but the same digit
    body = {"num_samples": 20, "seed": 0}
    answers = [client.post("/v1/classify", json={"images": [sent], **body}) for sent in (DIGIT_PNG, jpeg)]
    assert answers[1].status_code == 200, answers[1].text
    assert answers[1].json()["results"][0]["predicted"] == answers[0].json()["results"][0]["predicted"] == 3


def test_a_photo_turned_by_its_exif_orientation_is_read_upright():
    turned = digit().rotate(90, expand=True)  # stored turned, as a phone does, with the tag that undoes it
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view
    upright = decode_image(saved(turned, "PNG", exif=exif), "images[0]", SHAPE)
    assert np.array_equal(upright, decode_image(DIGIT_PNG, "images[0]", SHAPE))


def jpeg_claiming(width: int, height: int) -> str:
    """A small JPEG whose frame header (SOF0) claims width x height pixels."""
    raw = bytearray(base64.b64decode(saved(Image.new("L", (8, 8)), "JPEG")))
    frame = raw.index(b"\xff\xc0") + 5  # marker, length (2 bytes), precision (1 byte), then height and width
    raw[frame : frame + 4] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return base64.b64encode(bytes(raw)).decode()


def test_other_formats_keep_the_size_limits_judged_before_decoding(client):
    big = jpeg_claiming(5000, 5000)
    problem = refusal(client.post("/v1/classify", json={"images": [big]}))
    assert problem["field"] == "images[0]" and "is a 5000x5000 JPEG; send 28x28 pixels" in problem["message"]
    problem = refusal(client.post("/v1/classify", json={"images": [big], "preprocess": "mnist"}))
    assert "is a 5000x5000 JPEG" in problem["message"] and "at most 4096 pixels on a side" in problem["message"]
    bomb = jpeg_claiming(65000, 65000)  # beyond what Pillow decodes at all
    problem = refusal(client.post("/v1/classify", json={"images": [bomb], "preprocess": "mnist"}))
    assert "more pixels than can be decoded safely" in problem["message"]
    assert "at most 4096 pixels on a side" in problem["message"]


@pytest.mark.parametrize(
    "raw",
    [b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\n", b"%PDF-1.4\n", b"\x00\x00\x01\x00 an icon"],
    ids=["eps", "pdf", "ico"],
)
def test_a_file_of_another_format_is_refused_naming_the_formats_read(client, raw):
    sent = base64.b64encode(raw).decode()
    problem = refusal(client.post("/v1/classify", json={"images": [DIGIT_PNG, sent]}))
    assert problem["field"] == "images[1]"
    assert (
        "(PNG, JPEG, WebP, GIF, BMP or TIFF)" in problem["message"] and "not a readable PNG" not in problem["message"]
    )


def test_a_broken_file_is_named_by_the_format_it_begins_as(client):
    broken = base64.b64encode(base64.b64decode(saved(digit(), "JPEG"))[:40]).decode()
    problem = refusal(client.post("/v1/classify", json={"images": [broken]}))
    assert problem["message"].startswith("is not a readable JPEG;")


# ---- (b, c) numbers off their scale: the scale detected, and the pixel that breaks it --------------


def test_one_pixel_beyond_1_among_unit_floats_is_named_not_called_a_byte_image(client):
    image = [0.0] * 784
    image[100:110] = [0.8] * 10
    image[123] = 1.5
    problem = refusal(client.post("/v1/classify", json={"images": [image]}))
    assert problem["field"] == "images[0]"
    assert "look like [0, 1] floats, but images[0][123] is 1.5" in problem["message"]
    assert "integers from 0 to 255" not in problem["message"] and "0-255 scale" not in problem["message"]
    rows = np.array(image).reshape(SHAPE).tolist()
    problem = refusal(client.post("/v1/classify", json={"images": [[0.0] * 784, rows]}))
    assert problem["field"] == "images[1]" and "images[1][4][11] is 1.5" in problem["message"]


def test_a_byte_image_with_a_fraction_or_beyond_255_says_which_pixel(client):
    image = [0] * 784
    image[100:110] = [255] * 10
    image[7] = 127.5
    problem = refusal(client.post("/v1/classify", json={"images": [image]}))
    assert "look like the 0-255 scale, but images[0][7] is 127.5, not an integer" in problem["message"]
    image[7] = 300
    problem = refusal(client.post("/v1/classify", json={"images": [image]}))
    assert "images[0][7] is 300" in problem["message"] and "0 to 255" in problem["message"]


@pytest.mark.parametrize("scale", ["auto", "unit", "byte"])
def test_a_negative_pixel_is_out_of_range_on_either_scale(client, scale):
    image = [0.0] * 784
    image[5] = -1
    problem = refusal(client.post("/v1/classify", json={"images": [image], "pixel_scale": scale}))
    assert problem["field"] == "images[0]"
    assert "images[0][5] is -1" in problem["message"] and "both scales start at 0" in problem["message"]
    assert "pixel_scale 'byte'" not in problem["message"]


def test_a_fixed_scale_names_itself_and_the_pixel(client):
    image = [0.0] * 784
    image[9] = 2
    problem = refusal(client.post("/v1/classify", json={"images": [image], "pixel_scale": "unit"}))
    assert "(pixel_scale 'unit')" in problem["message"] and "images[0][9] is 2" in problem["message"]
    image[9] = 0.5
    problem = refusal(client.post("/v1/classify", json={"images": [image], "pixel_scale": "byte"}))
    assert "(pixel_scale 'byte')" in problem["message"] and "images[0][9] is 0.5" in problem["message"]


# ---- (d) pixels that are not numbers --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "said", "fix"),
    [
        ("0", 'the string "0"', 'send 0, not "0"'),
        ("0.25", 'the string "0.25"', 'send 0.25, not "0.25"'),
        ("dark", 'the string "dark"', "not strings"),
        (True, "true", "send 1, not true"),
        (False, "false", "send 0, not false"),
        (None, "null", "send 0 for background"),
    ],
)
def test_a_pixel_that_is_not_a_number_is_refused_naming_where_it_is(client, value, said, fix):
    image = [0] * 784
    image[40] = value
    problem = refusal(client.post("/v1/classify", json={"images": [DIGIT_PNG, image]}))
    assert problem["field"] == "images[1]"
    assert problem["message"].startswith(f"holds {said} at images[1][40]: pixels must be JSON numbers")
    assert fix in problem["message"]
    rows = [[0.0] * 28 for _ in range(28)]
    rows[3][5] = value
    problem = refusal(client.post("/v1/encode", json={"images": [rows], "preprocess": "mnist"}))
    assert f"holds {said} at images[0][3][5]" in problem["message"]


# ---- (e, f) the OpenAPI document ------------------------------------------------------------------

ERROR = {"$ref": "#/components/schemas/ErrorResponse"}


def error_schema(response: dict) -> dict:
    return response["content"]["application/json"]["schema"]


def test_the_openapi_document_declares_the_api_keys_and_the_answers_they_bring(client, shipped_model):
    schema = client.get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert schemes["api_key"] == {**schemes["api_key"], "type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schema["security"] == [{"bearer": []}, {"api_key": []}, {}]  # this service has no keys: optional
    keyed = create_app(Settings(model_dir=shipped_model, api_keys="k-0123456789abcdef")).openapi()
    assert keyed["security"] == [{"bearer": []}, {"api_key": []}]  # with keys, one is required
    paths = schema["paths"]
    for path, method in [
        ("/v1/classify", "post"),
        ("/v1/log-likelihood", "post"),
        ("/v1/samples", "post"),
        ("/v1/samples.png", "get"),
        ("/v2/models/{name}/infer", "post"),
    ]:
        responses = paths[path][method]["responses"]
        for status in ("401", "403", "429", "503"):
            assert status in responses, (path, status)
        for status in ("401", "403", "429"):
            assert error_schema(responses[status]) == ERROR, (path, status)
        assert "Retry-After" in responses["429"]["headers"]
    assert "429" not in paths["/v1/model"]["get"]["responses"]  # answered without the model's admission
    assert {"401", "403"} <= set(paths["/metrics"]["get"]["responses"])
    for path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"):
        operation = paths[path]["get"]
        assert operation["security"] == [] and "401" not in operation["responses"], path
    assert "ErrorResponse" in schema["components"]["schemas"]


def test_the_classify_description_promises_the_entropy_only_with_its_include(client):
    described = client.get("/openapi.json").json()["paths"]["/v1/classify"]["post"]["description"]
    assert described.index("entropy") > described.index('"estimates"') > described.index("`include`")
    body = {"images": [DIGIT_PNG], "num_samples": 8, "seed": 0}
    plain = client.post("/v1/classify", json=body).json()["results"][0]
    asked = client.post("/v1/classify", json={**body, "include": ["estimates"]}).json()["results"][0]
    assert "entropy" not in plain and asked["entropy"] >= 0
