"""The Open Inference Protocol over gRPC against HTTP's binary form on the scorer, and what tracing costs.

    python -m bench.protocols [--concurrency 8] [--seconds 10] [--rounds 3] [--images 8] [--k 100] [--out ...]

One service (`cvae-serve`, its own process, gRPC on beside HTTP) and, in this process,
`--concurrency` threads each with its own tritonclient (`tritonclient.grpc`, or `tritonclient.http`
with binary tensor data) calling the scorer on the same tensors (`--images` digits-like rows x K
samples) as fast as it answers, for `--seconds`; the two protocols alternate for `--rounds` rounds,
and each figure is the median round.

Tracing: single-image /v1/classify at its defaults (bench.load at `--concurrency`), with
CVAE_OTLP_ENDPOINT unset and set to a collector in this process that accepts every export, one
service after the other, alternating for `--rounds` rounds.

Writes bench/results/protocols.json and PROTOCOLS.md, and prints the markdown.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import tritonclient.grpc as grpc_client
import tritonclient.http as http_client

from bench.common import arguments, free_port, save, server
from bench.load import run_load


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
    endpoint = f"http://127.0.0.1:{collector.server_port}"
    body = {"images": [[0.0] * 300 + [1.0] * 184 + [0.0] * 300]}
    rounds = {"off": [], "on": []}
    for _ in range(args.rounds):
        for label in rounds:
            port = free_port()
            env = {"CVAE_PORT": str(port), "CVAE_MODEL_DIR": args.model_dir}
            env |= {"CVAE_OTLP_ENDPOINT": endpoint} if label == "on" else {}
            with server([sys.executable, "-m", "service.cli"], port, "/readyz", env) as base:
                run_load(base, "POST", "/v1/classify", lambda i: body, 1, 2, 1.0)  # warm-up
                result = run_load(base, "POST", "/v1/classify", lambda i: body, 1, args.concurrency, args.seconds)
            rounds[label].append(result.requests / result.seconds)
    collector.shutdown()
    median = {label: statistics.median(runs) for label, runs in rounds.items()}
    return {"requests_per_s": rounds, "median_requests_per_s": median, "on_over_off": median["on"] / median["off"]}


def calls_per_second(module, url: str, arrays: dict, concurrency: int, seconds: float) -> float:
    counts = [0] * concurrency
    stop = time.perf_counter() + seconds

    def worker(index: int) -> None:
        client = module.InferenceServerClient(url)
        inputs = []
        for name, array in arrays.items():
            inputs.append(module.InferInput(name, list(array.shape), "FP32"))
            inputs[-1].set_data_from_numpy(array, **({"binary_data": True} if module is http_client else {}))
        while time.perf_counter() < stop:
            client.infer("scorer", inputs)
            counts[index] += 1
        client.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--k", type=int, default=100, help="samples per row")
    args = parser.parse_args(argv)
    http_port, grpc_port = free_port(), free_port()
    env = {"CVAE_PORT": str(http_port), "CVAE_GRPC_PORT": str(grpc_port), "CVAE_MODEL_DIR": args.model_dir}
    with server([sys.executable, "-m", "service.cli"], http_port, "/readyz", env) as base:
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
        rounds = {label: [] for label in clients}
        for _ in range(args.rounds):
            for label, (module, url) in clients.items():
                rounds[label].append(calls_per_second(module, url, arrays, args.concurrency, args.seconds))
    median = {label: statistics.median(runs) for label, runs in rounds.items()}
    ratio = median["gRPC"] / median["HTTP, binary tensors"]
    tracing = tracing_cost(args)
    report = {**vars(args), "calls_per_s": rounds, "median_calls_per_s": median, "grpc_over_http": ratio}
    report["tracing"] = tracing
    rows = [
        f"| {label} | {median[label]:.1f} | {'; '.join(f'{r:.1f}' for r in runs)} |" for label, runs in rounds.items()
    ]
    text = "\n".join(
        [
            "# gRPC against HTTP on the scorer\n\nWritten by `python -m bench.protocols` (docs/performance.md).",
            f"\nScorer calls of {args.images} rows x K = {args.k}, {args.concurrency} clients, {args.seconds:g} s a "
            f"round, {args.rounds} rounds alternating.\n",
            "| protocol | calls/s (median) | each round |\n|---|---|---|",
            *rows,
            f"\ngRPC over HTTP's binary form: {ratio:.2f}x (target ≥ 0.95x).\n",
            f"## Tracing\n\nSingle-image `/v1/classify`, {args.concurrency} clients, {args.seconds:g} s a round.\n",
            "| tracing | requests/s (median) | each round |\n|---|---|---|",
            *(
                f"| {label} | {tracing['median_requests_per_s'][label]:.1f} | {'; '.join(f'{r:.1f}' for r in runs)} |"
                for label, runs in tracing["requests_per_s"].items()
            ),
            f"\nWith tracing on: {tracing['on_over_off']:.3f} of the throughput off (target ≥ 0.97).\n",
        ]
    )
    save(args.out, "protocols", report, text)


if __name__ == "__main__":
    main()
