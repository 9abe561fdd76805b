"""The Open Inference Protocol over gRPC against HTTP's binary form on the scorer, and what tracing costs.
Writes bench/results/protocols.json and PROTOCOLS.md.

    python -m bench.protocols [--concurrency 8] [--seconds 10] [--rounds 3] [--images 8] [--k 100] [--out ...]

One service with gRPC on beside HTTP, and `--concurrency` threads here each with its own tritonclient
(gRPC, or HTTP with binary tensor data) calling the scorer on the same tensors (`--images` digits-like
rows x `--k` samples) as fast as it answers. Tracing: single-image /v1/classify at its defaults with
CVAE_OTLP_ENDPOINT unset and set to a collector here that takes every export. Each pair alternates
for `--rounds` rounds of `--seconds`; each figure is the median round.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import tritonclient.grpc as grpc_client
import tritonclient.http as http_client

from bench.common import alternate, arguments, benchmark, document, each, free_port, medians, service, table
from bench.load import run_load
from bench.mixed_load import ONE


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector that takes every export and keeps nothing."""

    def do_POST(self):  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def tracing_cost(args) -> dict:
    collector = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    body = lambda i: {"images": [ONE]}  # noqa: E731

    def classify(env: dict) -> float:
        with service({"CVAE_MODEL_DIR": args.model_dir, **env}) as base:
            run_load(base, "POST", "/v1/classify", body, 1, 2, 1.0)  # warm-up
            result = run_load(base, "POST", "/v1/classify", body, 1, args.concurrency, args.seconds)
        return result.requests / result.seconds

    on = {"CVAE_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.server_port}"}
    rounds = alternate(args.rounds, {"off": lambda: classify({}), "on": lambda: classify(on)})
    collector.shutdown()
    median = medians(rounds)
    return {"requests_per_s": rounds, "median_requests_per_s": median, "on_over_off": median["on"] / median["off"]}


def calls_per_second(module, url: str, arrays: dict, concurrency: int, seconds: float) -> float:
    """Scorer calls answered per second to `concurrency` threads, each with its own client of `module`."""
    stop = time.perf_counter() + seconds

    def worker(_) -> int:
        client, calls = module.InferenceServerClient(url), 0
        inputs = [module.InferInput(name, list(array.shape), "FP32") for name, array in arrays.items()]
        for tensor, array in zip(inputs, arrays.values()):
            tensor.set_data_from_numpy(array, **({"binary_data": True} if module is http_client else {}))
        while time.perf_counter() < stop:
            client.infer("scorer", inputs)
            calls += 1
        client.close()
        return calls

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        calls = sum(pool.map(worker, range(concurrency)))
    return calls / (time.perf_counter() - started)


def measure(args) -> dict:
    grpc_port = free_port()
    with service({"CVAE_GRPC_PORT": str(grpc_port), "CVAE_MODEL_DIR": args.model_dir}) as base:
        latent = int(http_client.InferenceServerClient(base[7:]).get_model_metadata("decoder")["inputs"][0]["shape"][1])
        rng = np.random.default_rng(0)
        arrays = {
            "x": (rng.random((args.images, 784)) > 0.7).astype(np.float32),
            "y": np.eye(10, dtype=np.float32)[np.arange(args.images) % 10],
            "eps": rng.standard_normal((args.k, args.images, latent)).astype(np.float32),
        }
        clients = {"HTTP, binary tensors": (http_client, base[7:]), "gRPC": (grpc_client, f"127.0.0.1:{grpc_port}")}
        for module, url in clients.values():  # warm-up
            calls_per_second(module, url, arrays, args.concurrency, 1.0)
        calls = lambda module, url: lambda: calls_per_second(module, url, arrays, args.concurrency, args.seconds)  # noqa: E731
        rounds = alternate(args.rounds, {label: calls(*client) for label, client in clients.items()})
    median = medians(rounds)
    ratio = median["gRPC"] / median["HTTP, binary tensors"]
    return {"calls_per_s": rounds, "median_calls_per_s": median, "grpc_over_http": ratio, "tracing": tracing_cost(args)}


def markdown(report: dict) -> str:
    tracing = report["tracing"]
    rows = lambda median, rounds: [[label, f"{median[label]:.1f}", each(runs)] for label, runs in rounds.items()]  # noqa: E731
    return document(
        "# gRPC against HTTP on the scorer",
        "Written by `python -m bench.protocols` (docs/performance.md).",
        f"Scorer calls of {report['images']} rows x K = {report['k']}, {report['concurrency']} clients, "
        f"{report['seconds']:g} s a round, {report['rounds']} rounds alternating.",
        table(
            ["protocol", "calls/s (median)", "each round"], rows(report["median_calls_per_s"], report["calls_per_s"])
        ),
        f"gRPC over HTTP's binary form: {report['grpc_over_http']:.2f}x (target ≥ 0.95x).",
        "## Tracing",
        f"Single-image `/v1/classify`, {report['concurrency']} clients, {report['seconds']:g} s a round.",
        table(
            ["tracing", "requests/s (median)", "each round"],
            rows(tracing["median_requests_per_s"], tracing["requests_per_s"]),
        ),
        f"With tracing on: {tracing['on_over_off']:.3f} of the throughput off (target ≥ 0.97).",
    )


def main(argv: list[str] | None = None) -> None:
    parser = arguments(
        "bench.protocols",
        __doc__,
        data=None,
        concurrency=(8, "client threads"),
        seconds=(10.0, "length of each round"),
        rounds=(3, "rounds, the protocols (and tracing off and on) alternately"),
        images=(8, "digits-like rows per scorer call"),
        k=(100, "samples per row"),
    )
    benchmark(parser, argv, "protocols", measure, markdown)


if __name__ == "__main__":
    main()
