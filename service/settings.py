"""The service's one Settings class: every knob, read from CVAE_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.schemas.options import default_of

SHIPPED_REPOSITORY = Path(__file__).resolve().parent.parent / "models"
SHIPPED_NAME = "mnist-cvae"  # the default model, unless CVAE_DEFAULT_MODEL names another
SHIPPED_MODEL = SHIPPED_REPOSITORY / SHIPPED_NAME / "1.0.0"  # the version the benchmarks name by default


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CVAE_", protected_namespaces=())

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    grpc_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="also serve the Open Inference Protocol over gRPC on this port (on host), the same graphs "
        "as /v2 (unset: no gRPC)",
    )
    model_repository: Path = Field(
        SHIPPED_REPOSITORY,
        description="folder of <name>/<version>/ model directories made by `cvae export`; every version found "
        "is served (unless keep_versions limits them); folders named .* are ignored",
    )
    model_dir: Path | None = Field(None, description="serve this one model directory instead of a repository")
    default_model: str = Field(
        "",
        description=f"the model a request gets when it names none (empty: {SHIPPED_NAME} when it "
        "has a ready version, else the first name that has one)",
    )
    keep_versions: int = Field(
        0,
        ge=0,
        description="per model, serve only the newest N versions that load and leave the older ones unserved "
        "(0: every version on disk serves)",
    )
    max_model_file_bytes: int = Field(
        1 << 30,
        ge=1,
        description="largest model file a version may list; a larger one is refused by its size, before it is read",
    )
    model_control: bool = Field(
        False,
        description="open POST /v1/models/{name}/versions/{version}/load and /unload without API keys (with "
        "CVAE_API_KEYS set, a key opens them; with neither, they answer 403)",
    )
    repository_poll_s: float = Field(
        2.0, ge=0, description="how often the repository is scanned for new, changed or removed versions (0: never)"
    )

    providers: str = Field(
        "auto",
        description="'auto' (TensorRT/CUDA when present, else CPU) or a comma-separated list of "
        "ONNX Runtime execution providers, e.g. 'CUDAExecutionProvider,CPUExecutionProvider'",
    )
    strict_providers: bool = Field(False, description="refuse to start when a requested GPU provider is not active")
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads (0: its default)")

    max_images: int = Field(256, ge=1, description="most images in one scoring, classify or encode request")
    max_request_pixels: int = Field(
        4096 * 4096,
        ge=784,
        description="with preprocess 'mnist', most pixels in one request's images together; a PNG is judged by "
        "its header, before it is decoded (422 beyond)",
    )
    max_samples: int = Field(1024, ge=1, description="most images one sampling request may ask for")
    max_num_samples: int = Field(
        20000, ge=2, description="most importance samples per image and class, first round and rounds together"
    )
    default_num_samples: int = default_of("num_samples", 1000, "K of the first round")
    default_tolerance: float = default_of(
        "tolerance",
        0.0,
        "the target standard error of log p(x) in nats; rounds double the samples of the classes that matter "
        "until it is met (0: a single round)",
        ge=0,
    )
    max_work: int = Field(
        2_000_000,
        ge=1,
        description="most decoder passes (images x classes x K) one request may cost; lowered to what this machine "
        "computes in half of request_timeout_s at the rate measured when a version loads (GET /v1/model's limits)",
    )
    max_body_bytes: int = Field(8_000_000, ge=1024, description="largest request body accepted (413 beyond)")
    score_chunk_rows: int = Field(
        2048,
        ge=1,
        description="most decoder passes (K x rows) in one scorer call: bounds memory; the default keeps a "
        "call's logits (6 MB) in a CPU's cache, a GPU wants tens of thousands",
    )

    max_queue: int = Field(
        256,
        ge=1,
        description="most model calls waiting for a batch (503 beyond); scorer calls too large to batch "
        "run at once, bounded by max_in_flight",
    )
    max_in_flight: int = Field(
        128, ge=1, description="most model requests admitted at once, running or waiting their turn (503 beyond)"
    )
    request_timeout_s: float = Field(30.0, gt=0, description="longest a model request may take (504 beyond)")
    max_running: int = Field(
        4,
        ge=1,
        description="most admitted requests running at once; the others wait, the caller holding fewest first "
        "(on a CPU more only share its cores: docs/decisions.md); raise it for a GPU",
    )
    caller_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="share of max_in_flight one caller (API key, or client address) may hold (429 beyond)",
    )
    caller_rate: str = Field(
        "", description="most requests one caller may send, as '100/second' or '1000/minute' (429 beyond; empty: none)"
    )
    keep_alive_s: float = Field(
        75.0, gt=0, description="idle keep-alive before the server closes a connection; longer than clients' pools"
    )
    shutdown_grace_s: float = Field(30.0, ge=0, description="on SIGTERM, how long in-flight requests may finish")

    api_keys: str = Field(
        "", description="comma-separated API keys; when set, every endpoint but /healthz and /readyz needs one"
    )
    cors_origins: str = Field("", description="comma-separated origins allowed by CORS (none by default)")
    log_format: str = Field("json", pattern="^(json|text)$", description="log lines as JSON objects or plain text")
    otlp_endpoint: str = Field(
        "",
        description="send OpenTelemetry traces over OTLP/HTTP to this URL, e.g. http://collector:4318/v1/traces "
        "(the `tracing` extra; empty: no tracing)",
    )

    ood_fpr: float = default_of("ood_fpr", 0.01, "the false-positive rate of the out-of-distribution flag")
    min_probability: float | None = default_of(
        "min_probability",
        None,
        "/v1/classify abstains below this p(predicted|x), or the critic's probability of the predicted class "
        "(unset: the model's calibrated default, the largest that abstains on at most 2 % of validation digits; "
        "0 without one)",
    )

    @field_validator("caller_rate")
    @classmethod
    def _a_rate(cls, value: str) -> str:
        if value.strip():
            from limits import parse

            try:
                parse(value)
            except ValueError as error:
                raise ValueError(f"{value!r} is not a rate: write it as '100/second' or '1000/minute'") from error
        return value.strip()

    @property
    def api_key_list(self) -> list[str]:
        return [key.strip() for key in self.api_keys.split(",") if key.strip()]

    @property
    def control_closed(self) -> str | None:
        """Why loading and unloading versions by request is closed, or None when it is open: closed while
        anyone who reaches the port could do it (no API keys set and CVAE_MODEL_CONTROL not opening it)."""
        if self.api_key_list or self.model_control:
            return None
        return (
            "Loading and unloading versions is closed while no API keys are set: set CVAE_API_KEYS and send a "
            "key, or set CVAE_MODEL_CONTROL=true to open it to anyone who reaches the port."
        )

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]


def unknown_variables(environ) -> list[str]:
    """The CVAE_* variables in `environ` that name no setting (a typo, or a setting since removed:
    docs/changes.md), which the service would otherwise ignore without a word."""
    known = {f"CVAE_{name.upper()}" for name in Settings.model_fields}
    return sorted(name for name in environ if name.upper().startswith("CVAE_") and name.upper() not in known)


class Defaults(Settings):
    """The declared defaults with the values given on top, never the CVAE_* environment: what scoring
    outside the service (training's commands, batch scoring, the benchmarks) runs with, so that a
    service's variables in the shell never steer a calibration or a figure."""

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, **environment):
        return (init_settings,)


@lru_cache
def get_settings() -> Settings:
    """The service's settings, read from the environment once per process."""
    return Settings()
