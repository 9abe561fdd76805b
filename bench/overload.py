"""The service under overload: goodput with clients that give up, and a light caller beside a heavy one.
Writes bench/results/overload.json and OVERLOAD.md.

    python -m bench.overload [--seconds 20] [--give-up 1.0] [--overload 4] [--rounds 2] [--out bench/results]

The service (the shipped repository's default version) answers single-image /v1/classify at its
defaults, on MNIST test digits; each figure is the median of `--rounds` rounds. Goodput: after the
capacity (closed loop, concurrency 8), requests arrive open-loop (Poisson) at `--overload` times it,
each on a connection of its own that its client closes after `--give-up` seconds without an answer
(the service then stops that request's work): the requests answered 200 and read in time, per second.
Fair share: with two API keys, the light key's p99 latency at concurrency 4 beside the heavy key at 64
over its p99 alone (closed loop, `--seconds` each), at the default CVAE_MAX_RUNNING and, alternately,
with every admitted request running at once (CVAE_MAX_RUNNING = CVAE_MAX_IN_FLIGHT, no caller waits).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from urllib.parse import urlsplit

import numpy as np

from bench.common import alternate, arguments, benchmark, document, each, medians, mnist_digits, service, table
from bench.load import Connection, _head, load, run_load, until


async def _open_loop(base: str, bodies: list[bytes], rate: float, seconds: float, give_up: float) -> Counter:
    """Poisson arrivals at `rate` per second for `seconds`, each on a connection of its own; each one's outcome."""
    url, outcomes, rng = urlsplit(base), Counter(), np.random.default_rng(0)

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

    tasks, start = [], time.perf_counter()
    arrival = start
    while (arrival := arrival + rng.exponential(1 / rate)) < start + seconds:
        await asyncio.sleep(max(0.0, arrival - time.perf_counter()))
        tasks.append(asyncio.create_task(one(bodies[len(tasks) % len(bodies)])))
    await asyncio.gather(*tasks)
    return outcomes


def goodput(args, bodies: list[bytes]) -> dict:
    with service() as base:
        closed = run_load(base, "POST", "/v1/classify", lambda i: json.loads(bodies[i % len(bodies)]), 1, 8, args.warm)
    capacity = closed.requests / closed.seconds
    rate = args.overload * capacity

    def overloaded() -> dict:
        with service() as base:
            outcomes = asyncio.run(_open_loop(base, bodies, rate, args.seconds, args.give_up))
        return {"goodput": outcomes["answered"] / args.seconds, "outcomes": dict(outcomes)}

    rounds = [overloaded() for _ in range(args.rounds)]
    goodput = statistics.median(r["goodput"] for r in rounds)
    return {"capacity_per_s": capacity, "arrival_per_s": rate, "rounds": rounds, "goodput_per_s": goodput}


def fair_share(args, bodies: list[bytes]) -> dict:
    request = lambda i: ("POST", "/v1/classify", json.loads(bodies[i % len(bodies)]))  # noqa: E731

    async def beside(base: str, seconds: float, heavy: bool):  # the light key at 4, and the heavy one at 64
        keys = [("light", 4), ("heavy", 64)][: 1 + heavy]
        return await asyncio.gather(
            *(load(base, request, c, until(seconds), timeout=60, headers=(f"X-API-Key: {key}",)) for key, c in keys)
        )

    def light_beside_heavy(extra: dict) -> dict:
        with service({"CVAE_API_KEYS": "heavy,light", **extra}) as base:
            asyncio.run(beside(base, args.warm, heavy=False))  # warm-up
            (alone,) = asyncio.run(beside(base, args.seconds, heavy=False))
            light, heavy = asyncio.run(beside(base, args.seconds, heavy=True))
        return {
            "alone_p99_ms": alone.percentile(99),
            "beside_p99_ms": light.percentile(99),
            "ratio": light.percentile(99) / alone.percentile(99),
            "light_failed": alone.errors + light.errors,
            "heavy_per_s": heavy.requests / heavy.seconds,
            "heavy_failed": heavy.errors,
        }

    every = {"CVAE_MAX_RUNNING": "128", "CVAE_CALLER_SHARE": "1"}  # 128: CVAE_MAX_IN_FLIGHT's default
    arms = {"default": lambda: light_beside_heavy({}), "all at once, no shares": lambda: light_beside_heavy(every)}
    rounds = alternate(args.rounds, arms)
    ratio = medians({label: [r["ratio"] for r in runs] for label, runs in rounds.items()})
    return {"rounds": rounds, "ratio": ratio}


def markdown(report: dict) -> str:
    g, f = report["goodput"], report["fair_share"]
    outcomes = [", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items())) for r in g["rounds"]]
    heavy = lambda runs: "; ".join(f"{r['heavy_per_s']:.1f} ({r['heavy_failed']})" for r in runs)  # noqa: E731
    column = lambda runs, key, form: each([r[key] for r in runs], form)  # noqa: E731
    return document(
        "# The service under overload",
        "Written by `python -m bench.overload`; docs/performance.md says how.",
        "## Goodput with clients that give up",
        f"Single-image `/v1/classify` at its defaults; capacity {g['capacity_per_s']:.1f} requests/s (closed loop, "
        f"concurrency 8); arrivals {g['arrival_per_s']:.1f}/s for {report['seconds']:g} s, each client giving up after "
        f"{report['give_up']:g} s (its request's work then cancelled); median of {len(g['rounds'])} rounds.",
        table(
            ["goodput (answered and read per s)", "outcomes of each round"],
            [[f"{g['goodput_per_s']:.1f}", "; ".join(outcomes)]],
        ),
        "## A light caller beside a heavy one",
        f"Closed loop, {report['seconds']:g} s each: the light key at concurrency 4, alone and beside the heavy key "
        "at 64.",
        table(
            ["admission", "light p99 alone (ms)", "beside heavy (ms)", "ratio (median)", "light failed"]
            + ["heavy answered/s (failed)"],
            [
                [label, column(runs, "alone_p99_ms", "{:.0f}"), column(runs, "beside_p99_ms", "{:.0f}")]
                + [f"{f['ratio'][label]:.2f}", column(runs, "light_failed", "{}"), heavy(runs)]
                for label, runs in f["rounds"].items()
            ],
        ),
        f"The light key's p99 beside the heavy key at the defaults: {f['ratio']['default']:.2f}x alone (target ≤ 2x).",
    )


def main(argv: list[str] | None = None) -> None:
    parser = arguments(
        "bench.overload",
        __doc__,
        seconds=(20.0, "length of each measured run"),
        warm=(8.0, "length of the capacity and warm-up runs"),
        give_up=(1.0, "seconds a client waits for its answer"),
        overload=(4.0, "arrival rate over the capacity"),
        rounds=(2, "rounds of each measurement"),
        images=(200, "test digits sent, one per request"),
    )

    def measure(args) -> dict:
        images, _ = mnist_digits(args.images, args.data_dir, "binary")
        bodies = [json.dumps({"images": [image.tolist()]}).encode() for image in images]
        return {"goodput": goodput(args, bodies), "fair_share": fair_share(args, bodies)}

    benchmark(parser, argv, "overload", measure, markdown)


if __name__ == "__main__":
    main()
