"""The bodies of the /v1 API: requests (requests.py) and answers (responses.py)."""

from service.schemas.requests import (
    DIGIT_PNG,
    ClassifyRequest,
    EncodeRequest,
    ImagesRequest,
    InterpolateRequest,
    SampleRequest,
    ScoreRequest,
)
from service.schemas.responses import (
    ClassifyResponse,
    EncodeResponse,
    ErrorResponse,
    ModelInfo,
    ModelList,
    ModelVersion,
    SampleResponse,
    ScoreResponse,
)

__all__ = [
    "DIGIT_PNG",
    "ClassifyRequest",
    "ClassifyResponse",
    "EncodeRequest",
    "EncodeResponse",
    "ErrorResponse",
    "ImagesRequest",
    "InterpolateRequest",
    "ModelInfo",
    "ModelList",
    "ModelVersion",
    "SampleRequest",
    "SampleResponse",
    "ScoreRequest",
    "ScoreResponse",
]
