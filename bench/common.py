"""What the benchmarks share: MNIST's test digits (read by training's reader and binarized as
`cvae evaluate` does, so that a benchmark and the model card score the same images), the service and
its peers started and stopped, arguments, rounds and reports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from training.data import DATA_DIR_HELP, MnistDataError, load_mnist
from training.data import data_dir as mnist_folder

RESULTS = Path(__file__).resolve().parent / "results"
TEST_SEED = 0  # `cvae evaluate`'s default --seed: the test binarization of the model card


def mnist_digits(
    limit: int = 0, data_dir: str | Path | None = None, form: str = "grey", seed: int = TEST_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """The first `limit` MNIST test digits (0: all) [N, 784] and their labels [N]; `data_dir` or else
    $MNIST_DIR names MNIST's folder. `form`: 'pixels', uint8 as the files hold them; 'grey', pixel/255
    in [0, 1]; 'binary', float32 binarized as `cvae evaluate --seed SEED` does (training.train.binarize:
    x ~ Bernoulli(pixel/255), all 10,000 drawn at once with torch seed `seed`)."""
    data = load_mnist(mnist_folder(data_dir))
    if form == "binary":
        import torch

        from training.train import binarize

        x = binarize(torch.from_numpy(data.test_x), torch.Generator().manual_seed(seed)).numpy()
    elif form in ("pixels", "grey"):
        x = data.test_x if form == "pixels" else data.test_x / 255.0
    else:
        raise ValueError(f"form is {form!r}; choose 'pixels', 'grey' or 'binary'.")
    return x[: limit or None], data.test_y[: limit or None]


def arguments(module: str, doc: str, data: str | None = DATA_DIR_HELP, **options: tuple) -> argparse.ArgumentParser:
    """The parser of `python -m MODULE`, described by the module's `doc`: --model-dir (the shipped model),
    --data-dir (help `data`; None: no such flag), --out, and one --option per keyword, name=(default, help),
    of the default's type (a type in place of the default: that type, no default)."""
    from service.settings import SHIPPED_MODEL

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(f"python -m {module}", description=doc, formatter_class=formatter)
    parser.add_argument("--model-dir", default=str(SHIPPED_MODEL))
    if data is not None:
        parser.add_argument("--data-dir", help=data)
    parser.add_argument("--out", default=str(RESULTS), help="folder for the results (default %(default)s)")
    for name, (default, text) in options.items():
        kind, default = (default, None) if isinstance(default, type) else (type(default), default)
        text += "" if default is None else " (default %(default)s)"
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=default, help=text)
    return parser


def benchmark(parser: argparse.ArgumentParser, argv, stem: str, measure, markdown, errors: tuple = ()) -> dict:
    """Parse `argv` (None: the command line's) and measure(args) a report; write it, after the command, the
    arguments and the CPU count, as `stem`.json into --out, and its markdown(report) as `STEM`.md, and print
    that. Missing or bad data (MnistDataError, or one of `errors`) stops it as a usage error naming the fix."""
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    try:
        report = {"command": shlex.join([*parser.prog.split(), *argv]), **vars(args), "cpu_count": os.cpu_count()}
        report |= measure(args)
    except (MnistDataError, *errors) as error:
        parser.error(str(error))
    out, text = Path(args.out), markdown(report)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / f"{stem.upper()}.md").write_text(text)
    print(text)
    return report


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(command: list[str], port: int, ready_path: str, env: dict | None = None, timeout: float = 120):
    """Run `command` as a server in its own process group (its workers go down with it) until `ready_path`
    answers 200; yield its base URL."""
    out = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    process = subprocess.Popen(command, env={**os.environ, **(env or {})}, start_new_session=True, **out)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command} exited with {process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + ready_path, timeout=2).status_code == 200:
                    break
            if time.time() > deadline:
                raise RuntimeError(f"{command} never became ready")
            time.sleep(0.3)
        yield base
    finally:
        stop_group(process)


def service(env: dict | None = None):
    """The service (`cvae-serve`) in its own process on a free port, with `env` set (CVAE_GRPC_PORT too,
    for its gRPC side), as a context that yields its base URL: the one way the benchmarks start it."""
    port = free_port()
    return server([sys.executable, "-m", "service.cli"], port, "/readyz", {**(env or {}), "CVAE_PORT": str(port)})


def peer(module: str, ready_path: str, model_dir: str, *extra: str):
    """A peer of bench.peers (`python -m MODULE MODEL_DIR PORT EXTRA...`) on a free port, as service() is."""
    port = free_port()
    return server([sys.executable, "-m", module, model_dir, str(port), *extra], port, ready_path)


def stop_group(process: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM to the server's whole process group (LitServe's workers are child processes that
    would otherwise live on and take CPU from every later measurement), SIGKILL after `grace`."""
    group = process.pid  # the leader of its own session: the group's id is its pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)  # whatever of the group is still there
    process.wait()


def alternate(rounds: int, arms: dict[str, Callable[[], object]]) -> dict[str, list]:
    """Each arm's figure in each of `rounds` rounds, the arms one after the other within a round, so that
    drift in the machine's speed spreads over all of them."""
    runs: dict[str, list] = {label: [] for label in arms}
    for _ in range(rounds):
        for label, measure in arms.items():
            runs[label].append(measure())
    return runs


def medians(runs: dict[str, list[float]]) -> dict[str, float]:
    return {label: statistics.median(values) for label, values in runs.items()}


def each(values, form: str = "{:.1f}") -> str:
    """Every round's figure, as a table cell."""
    return "; ".join(form.format(value) for value in values)


def document(*blocks) -> str:
    """A report's markdown: `blocks`, each a paragraph (text) or a table's lines, a blank line between them."""
    return "\n\n".join(block if isinstance(block, str) else "\n".join(block) for block in blocks) + "\n"


def table(head: list[str], rows) -> list[str]:
    """A markdown table's lines: the header `head`, then each row of `rows` (a list of cells as text)."""
    lines = ["| " + " | ".join(cells) + " |" for cells in [head, *rows]]
    return [lines[0], "|---" * len(head) + "|", *lines[1:]]
