"""The service under overload: goodput with clients that give up, and a light caller beside a heavy one.

    python -m bench.overload [--seconds 20] [--give-up 1.0] [--overload 4] [--rounds 2] [--out bench/results]

The service (`cvae-serve`, its own process, the shipped repository's default version) answers
single-image /v1/classify at its defaults, on MNIST test digits.

Goodput: the capacity is measured first, by bench.load at concurrency 8. Then requests arrive
open-loop (Poisson) at `--overload` times that rate, each on a connection of its own, and each client
closes its connection after `--give-up` seconds without an answer. The goodput is the requests
answered 200 and read within that time, per second, with CVAE_CANCEL_ABANDONED on and off.

Fair share: with two API keys, the light key sends at concurrency 4 alone, then beside the heavy key
at concurrency 64 (closed loop, `--seconds` each); its p99 latency beside the heavy key over its p99
alone. Measured at the default CVAE_MAX_RUNNING and with every admitted request running at once
(CVAE_MAX_RUNNING = CVAE_MAX_IN_FLIGHT, where no caller waits its turn).

Each setting runs `--rounds` times, alternately; each figure is the median round.

Writes bench/results/overload.json and OVERLOAD.md, and prints the markdown.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections import Counter
from urllib.parse import urlsplit

import numpy as np

from bench.common import arguments, binary_test_digits, free_port, save, server
from bench.load import Connection, _head, _load, run_load


def serve(port: int, cancel: bool, extra: dict | None = None):
    env = {"CVAE_PORT": str(port), "CVAE_CANCEL_ABANDONED": str(cancel).lower(), "CVAE_LOG_FORMAT": "text"}
    return server([sys.executable, "-m", "service.cli"], port, "/readyz", {**env, **(extra or {})})


async def _open_loop(base: str, bodies: list[bytes], rate: float, seconds: float, give_up: float) -> Counter:
    """Poisson arrivals at `rate` per second for `seconds`; each request's outcome."""
    url = urlsplit(base)
    outcomes: Counter = Counter()
    rng = np.random.default_rng(0)

    async def one(body: bytes) -> None:
        connection = Connection(url.hostname, url.port)
        try:
            head = _head("POST", url.netloc, "/v1/classify", len(body))
            status, _ = await asyncio.wait_for(connection.request(head, body), give_up)
            outcomes["answered" if status == 200 else f"status {status}"] += 1
        except TimeoutError:
            outcomes["gave up"] += 1
        except (OSError, asyncio.IncompleteReadError):
            outcomes["transport error"] += 1
        finally:
            await connection.close()

    tasks = []
    start = time.perf_counter()
    arrival = start
    i = 0
    while (arrival := arrival + rng.exponential(1 / rate)) < start + seconds:
        await asyncio.sleep(max(0.0, arrival - time.perf_counter()))
        tasks.append(asyncio.create_task(one(bodies[i % len(bodies)])))
        i += 1
    await asyncio.gather(*tasks)
    return outcomes


def goodput(args, bodies: list[bytes]) -> dict:
    port = free_port()
    with serve(port, True) as base:
        closed = run_load(base, "POST", "/v1/classify", lambda i: json.loads(bodies[i % len(bodies)]), 1, 8, args.warm)
    capacity = closed.requests / closed.seconds
    rate = args.overload * capacity
    rounds = {"on": [], "off": []}
    for _ in range(args.rounds):
        for label in ("on", "off"):
            with serve(free_port(), label == "on") as base:
                outcomes = asyncio.run(_open_loop(base, bodies, rate, args.seconds, args.give_up))
            rounds[label].append({"goodput": outcomes["answered"] / args.seconds, "outcomes": dict(outcomes)})
    median = {label: statistics.median(r["goodput"] for r in runs) for label, runs in rounds.items()}
    return {
        "capacity_per_s": capacity,
        "arrival_per_s": rate,
        "give_up_s": args.give_up,
        "seconds": args.seconds,
        "rounds": rounds,
        "goodput_per_s": median,
        "ratio": median["on"] / median["off"] if median["off"] else float("inf"),
    }


async def _beside(base: str, bodies: list[bytes], seconds: float, heavy: bool):
    """The light key's load at concurrency 4 and, when `heavy`, the heavy key's at 64 beside it."""
    body = lambda i: json.loads(bodies[i % len(bodies)])  # noqa: E731
    keys = [("light", 4), ("heavy", 64)][: 1 + heavy]
    loads = [_load(base, "POST", "/v1/classify", body, 1, c, seconds, 60, (f"X-API-Key: {key}",)) for key, c in keys]
    return await asyncio.gather(*loads)


def fair_share(args, bodies: list[bytes]) -> dict:
    every = {"CVAE_MAX_RUNNING": "128", "CVAE_CALLER_SHARE": "1"}  # 128: CVAE_MAX_IN_FLIGHT's default
    settings = {"default": {}, "all at once, no shares": every}
    rounds = {label: [] for label in settings}
    for _ in range(args.rounds):
        for label, extra in settings.items():
            with serve(free_port(), True, {"CVAE_API_KEYS": "heavy,light", **extra}) as base:
                asyncio.run(_beside(base, bodies, args.warm, heavy=False))  # warm-up
                (alone,) = asyncio.run(_beside(base, bodies, args.seconds, heavy=False))
                beside, heavy = asyncio.run(_beside(base, bodies, args.seconds, heavy=True))
            rounds[label].append(
                {
                    "alone_p99_ms": alone.percentile(99),
                    "beside_p99_ms": beside.percentile(99),
                    "ratio": beside.percentile(99) / alone.percentile(99),
                    "light_failed": alone.errors + beside.errors,
                    "heavy_per_s": heavy.requests / heavy.seconds,
                    "heavy_failed": heavy.errors,
                }
            )
    ratio = {label: statistics.median(r["ratio"] for r in runs) for label, runs in rounds.items()}
    return {"seconds": args.seconds, "rounds": rounds, "ratio": ratio}


def _rounds(part: dict) -> int:
    return len(next(iter(part["rounds"].values())))


def _cells(runs: list[dict], key: str, form: str) -> str:
    return "; ".join(form.format(r[key]) for r in runs)


def markdown(report: dict) -> str:
    g, f = report["goodput"], report["fair_share"]
    lines = [
        "# The service under overload\n\nWritten by `python -m bench.overload`; docs/performance.md says how.\n",
        f"## Goodput with clients that give up\n\nSingle-image `/v1/classify` at its defaults; capacity "
        f"{g['capacity_per_s']:.1f} requests/s (closed loop, concurrency 8); arrivals {g['arrival_per_s']:.1f}/s for "
        f"{g['seconds']:g} s, each client giving up after {g['give_up_s']:g} s; median of {_rounds(g)} rounds.\n",
        "| cancellation | goodput (answered and read per s) | outcomes of each round |\n|---|---|---|",
    ]
    for label, runs in g["rounds"].items():
        outcomes = "; ".join(", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items())) for r in runs)
        lines.append(f"| {label} | {g['goodput_per_s'][label]:.1f} | {outcomes} |")
    lines += [
        f"\nGoodput with cancellation: {g['ratio']:.2f}x without (target ≥ 2x).\n",
        f"## A light caller beside a heavy one\n\nClosed loop, {f['seconds']:g} s each: the light key at "
        "concurrency 4, alone and beside the heavy key at 64.\n",
        "| admission | light p99 alone (ms) | beside heavy (ms) | ratio (median) | light failed | heavy answered/s "
        "(failed) |\n|---|---|---|---|---|---|",
    ]
    for label, runs in f["rounds"].items():
        heavy = "; ".join(f"{r['heavy_per_s']:.1f} ({r['heavy_failed']})" for r in runs)
        lines.append(
            f"| {label} | {_cells(runs, 'alone_p99_ms', '{:.0f}')} | {_cells(runs, 'beside_p99_ms', '{:.0f}')} | "
            f"{f['ratio'][label]:.2f} | {_cells(runs, 'light_failed', '{}')} | {heavy} |"
        )
    lines.append(
        f"\nThe light key's p99 beside the heavy key at the defaults: {f['ratio']['default']:.2f}x alone (target ≤ 2x)."
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each measured run")
    parser.add_argument("--warm", type=float, default=8.0, help="length of the capacity and warm-up runs")
    parser.add_argument("--give-up", type=float, default=1.0, help="seconds a client waits for its answer")
    parser.add_argument("--overload", type=float, default=4.0, help="arrival rate over the capacity")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=200, help="test digits sent, one per request")
    args = parser.parse_args(argv)
    images, _ = binary_test_digits(args.images, args.data_dir)
    bodies = [json.dumps({"images": [image.tolist()]}).encode() for image in images]
    report = {"goodput": goodput(args, bodies), "fair_share": fair_share(args, bodies)}
    save(args.out, "overload", report, markdown(report))


if __name__ == "__main__":
    main()
