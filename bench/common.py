"""What the benchmarks share: MNIST's test set, servers started and stopped, and reports saved.

The test set is read by training's reader and binarized as `cvae evaluate` binarizes it, so that
a benchmark and the model card score the same images.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
TEST_SEED = 0  # `cvae evaluate`'s default --seed: the test binarization of the model card


def grey_test_digits(limit: int = 0, data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first `limit` MNIST test digits (0: all) as grey images [N, 784] in [0, 1], and their labels [N];
    `data_dir` or else $MNIST_DIR names MNIST's folder."""
    from training.data import data_dir as mnist_folder
    from training.data import load_mnist

    data = load_mnist(mnist_folder(data_dir))
    end = limit or None
    return data.test_x[:end] / 255.0, data.test_y[:end]


def binary_test_digits(
    limit: int = 0, data_dir: str | Path | None = None, seed: int = TEST_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """The first `limit` MNIST test digits (0: all), binarized as `cvae evaluate --seed SEED` does
    (training.train.binarize: x ~ Bernoulli(pixel/255), all 10,000 drawn at once with torch seed
    `seed`), as float32 [N, 784], and their labels [N]."""
    import torch

    from training.data import data_dir as mnist_folder
    from training.data import load_mnist
    from training.train import binarize

    data = load_mnist(mnist_folder(data_dir))
    x = binarize(torch.from_numpy(data.test_x), torch.Generator().manual_seed(seed)).numpy()
    end = limit or None
    return x[:end], data.test_y[:end]


def binarization(seed: int = TEST_SEED) -> str:
    """binary_test_digits' binarization, in the words of the model card's."""
    return f"x ~ Bernoulli(pixel/255), drawn once with torch seed {seed}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(command: list[str], port: int, ready_path: str, env: dict | None = None, timeout: float = 120):
    """Run `command` as a server in its own process group until `ready_path` answers 200; yield its base URL."""
    process = subprocess.Popen(  # its own process group: a server's workers go down with it
        command,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command} exited with {process.returncode}")
            try:
                if httpx.get(base + ready_path, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"{command} never became ready")
            time.sleep(0.3)
        yield base
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM to the server's whole process group (LitServe's workers are child processes that
    would otherwise live on and take CPU from every later measurement), SIGKILL after `grace`."""
    group = process.pid  # the leader of its own session: the group's id is its pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)  # whatever of the group is still there
    process.wait()


def save(out: str | Path, stem: str, report: dict, text: str) -> None:
    """A benchmark's figures as `stem`.json and its markdown as `STEM`.md in `out`; the markdown is printed."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{stem.upper()}.md").write_text(text)
    print(text)
