"""Prometheus metrics, one registry per app so that several apps can live in one process."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

CLIENT_CLOSED = 499  # the status of a request whose client left before it was answered (as nginx logs it)


class _Versions:
    """The model versions' states and in-flight requests, read from the repository at each scrape."""

    def __init__(self, listing: Callable[[], list[dict]]):
        self.listing = listing

    def collect(self):
        state = GaugeMetricFamily(
            "cvae_model_version_state",
            "1 for each model version, labelled with its state (loading, ready, failed, unloading, unloaded)",
            labels=["name", "version", "state"],
        )
        flight = GaugeMetricFamily(
            "cvae_model_version_in_flight", "Requests running on each model version", labels=["name", "version"]
        )
        for row in self.listing():
            state.add_metric([row["model"], row["version"], row["state"]], 1)
            flight.add_metric([row["model"], row["version"]], row["in_flight"])
        yield state
        yield flight


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._versions: _Versions | None = None
        self.requests = Counter(
            "cvae_requests", "HTTP requests answered", ["endpoint", "method", "status"], registry=self.registry
        )
        self.errors = Counter(
            "cvae_errors", "HTTP answers with a 4xx or 5xx status", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "cvae_request_seconds",
            "Time from request to response",
            ["endpoint"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "cvae_batch_images",
            "Images per request (scored, classified, encoded or sampled)",
            ["endpoint"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=self.registry,
        )

        self.rejected = Counter(
            "cvae_rejected",
            "Requests refused for capacity (503) or timed out (504)",
            ["reason"],
            registry=self.registry,
        )
        self.model_batch = Histogram(
            "cvae_model_batch_passes",
            "Decoder rows (x K for the scorer) per batched model call",
            ["graph"],
            buckets=(1, 10, 100, 1000, 5000, 10000, 20000, 50000),
            registry=self.registry,
        )
        self.callers_refused = Counter(
            "cvae_caller_refused",
            "Requests refused (429) past their caller's share or rate, by caller (key-N; 'address' without keys)",
            ["caller", "reason"],
            registry=self.registry,
        )
        self.model_passes = Counter(
            "cvae_model_passes",
            "Decoder rows (x K for the scorer) computed, batched or not",
            ["graph"],
            registry=self.registry,
        )

    def watch_versions(self, listing: Callable[[], list[dict]]) -> None:
        """Export the states of the model versions that `listing` returns (GET /v1/models' rows)."""
        if self._versions is None:
            self._versions = _Versions(listing)
            self.registry.register(self._versions)
        self._versions.listing = listing  # an app started again reports its new repository

    def observe_refused_caller(self, caller: str, reason: str) -> None:
        """A 429; callers known by address are counted together, so that no address becomes a label."""
        self.callers_refused.labels(caller if caller.startswith("key-") else "address", reason).inc()

    def observe_model_call(self, graph: str, size: int, batched: bool) -> None:
        """A model call of `size` decoder rows, run in a batch of concurrent calls or on its own."""
        self.model_passes.labels(graph).inc(size)
        if batched:
            self.model_batch.labels(graph).observe(size)

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """Count a request; one its client closed (CLIENT_CLOSED) got no answer, so it is no error answer."""
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if status >= 400 and status != CLIENT_CLOSED:
            self.errors.labels(endpoint, str(status)).inc()
