"""What the benchmarks share: MNIST's test set, servers started and stopped, and reports saved.

The test set is read by training's reader and binarized as `cvae evaluate` binarizes it, so that
a benchmark and the model card score the same images.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
TEST_SEED = 0  # `cvae evaluate`'s default --seed: the test binarization of the model card


def _mnist(data_dir: str | Path | None):
    from training.data import data_dir as mnist_folder
    from training.data import load_mnist

    return load_mnist(mnist_folder(data_dir))


def grey_test_digits(limit: int = 0, data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first `limit` MNIST test digits (0: all) as grey images [N, 784] in [0, 1], and their labels [N];
    `data_dir` or else $MNIST_DIR names MNIST's folder."""
    data = _mnist(data_dir)
    return data.test_x[: limit or None] / 255.0, data.test_y[: limit or None]


def binary_test_digits(
    limit: int = 0, data_dir: str | Path | None = None, seed: int = TEST_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """The first `limit` MNIST test digits (0: all), binarized as `cvae evaluate --seed SEED` does
    (training.train.binarize: x ~ Bernoulli(pixel/255), all 10,000 drawn at once with torch seed
    `seed`), as float32 [N, 784], and their labels [N]."""
    import torch

    from training.train import binarize

    data = _mnist(data_dir)
    x = binarize(torch.from_numpy(data.test_x), torch.Generator().manual_seed(seed)).numpy()
    return x[: limit or None], data.test_y[: limit or None]


def binarization(seed: int = TEST_SEED) -> str:
    """binary_test_digits' binarization, in the words of the model card's."""
    return f"x ~ Bernoulli(pixel/255), drawn once with torch seed {seed}"


def arguments(description: str, out: str | Path = RESULTS, data_dir: str | None = None) -> argparse.ArgumentParser:
    """A benchmark's parser with --model-dir (the shipped model), --data-dir (help `data_dir`) and --out."""
    from service.settings import SHIPPED_MODEL
    from training.data import DATA_DIR_HELP

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", default=str(SHIPPED_MODEL))
    parser.add_argument("--data-dir", help=data_dir or DATA_DIR_HELP)
    parser.add_argument("--out", default=str(out), help="folder for the results (default %(default)s)")
    return parser


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


@contextlib.contextmanager
def service(env: dict):
    """The service (`cvae-serve`) in its own process on a free port, with `env` set; yield its base URL."""
    port = free_port()
    with server([sys.executable, "-m", "service.cli"], port, "/readyz", {**env, "CVAE_PORT": str(port)}) as base:
        yield base


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


def table(head: list[str], rows) -> list[str]:
    """A markdown table's lines: the header `head`, then each row of `rows` (a list of cells as text)."""
    lines = ["| " + " | ".join(cells) + " |" for cells in [head, *rows]]
    return [lines[0], "|---" * len(head) + "|", *lines[1:]]


def save(out: str | Path, stem: str, report: dict, text: str) -> None:
    """A benchmark's figures as `stem`.json and its markdown as `STEM`.md in `out`; the markdown is printed."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{stem.upper()}.md").write_text(text)
    print(text)
