"""`cvae score` on Ray Data: every input format, bad rows, resumption, the service's own answers, a cluster."""

import gzip
import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from batch.output import read_results, results_schema  # noqa: E402
from batch.score import INCLUDE, image_seed, run  # noqa: E402
from service.schemas.rows import flatten  # noqa: E402

REQUEST = {"num_samples": 20}
COLUMNS = [
    "predicted",
    "probability",
    "log_px",
    "log_px_std_error",
    "probs",
    "out_of_distribution_p_value",
    "seed",
    "row",
]


@pytest.fixture(scope="module")
def local_ray():
    ray.shutdown()  # a Ray left by an earlier module
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def digits(shipped_model) -> np.ndarray:
    """Twelve 0-255 digits drawn by the model itself [12, 784]."""
    from service.engine.runtime import load_model
    from service.settings import Settings

    model = load_model(Settings(model_dir=shipped_model))
    rng = np.random.default_rng(0)
    logits = model.decode(rng.standard_normal((12, model.latent_dim)), np.arange(12) % 10)
    return np.round(255 / (1 + np.exp(-logits))).astype(np.uint8)


def png_bytes(row: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(row.reshape(28, 28), "L").save(buffer, "PNG")
    return buffer.getvalue()


def write_inputs(folder: Path, digits: np.ndarray) -> dict[str, Path]:
    header = struct.pack(">IIII", 2051, len(digits), 28, 28)
    paths = {
        "idx": folder / "images-idx3-ubyte",
        "idx.gz": folder / "images-idx3-ubyte.gz",
        "npy": folder / "images.npy",
        "npz": folder / "images.npz",
        "parquet numbers": folder / "numbers.parquet",
        "parquet png": folder / "png.parquet",
        "png folder": folder / "pngs",
    }
    paths["idx"].write_bytes(header + digits.tobytes())
    paths["idx.gz"].write_bytes(gzip.compress(header + digits.tobytes()))
    np.save(paths["npy"], digits.reshape(-1, 28, 28))
    np.savez(paths["npz"], x=digits)
    pq.write_table(pa.table({"pixels": [row.tolist() for row in digits]}), paths["parquet numbers"], row_group_size=5)
    ids = [f"digit-{i}" for i in range(len(digits))]
    pq.write_table(pa.table({"id": ids, "image": [png_bytes(row) for row in digits]}), paths["parquet png"])
    paths["png folder"].mkdir()
    for i, row in enumerate(digits):
        (paths["png folder"] / f"{i:03d}.png").write_bytes(png_bytes(row))
    return paths


def table(out) -> dict:
    return read_results(out).select(COLUMNS).to_pydict()


def test_every_input_format_gives_the_same_answers(local_ray, digits, shipped_model, tmp_path):
    paths = write_inputs(tmp_path, digits)
    answers = {}
    for name, path in paths.items():
        out = tmp_path / f"out-{name.replace(' ', '-')}"
        summary = run(path, out, shipped_model, seed=3, block_size=5, request=REQUEST, progress=False)
        assert summary.rows == 12 and summary.errors == 0 and summary.blocks == 3, name
        answers[name] = table(out)
        ids = read_results(out).column("id").to_pylist()
        expected = {"parquet png": [f"digit-{i}" for i in range(12)], "png folder": [f"{i:03d}.png" for i in range(12)]}
        assert ids == expected.get(name, [str(i) for i in range(12)]), name
    for name, answer in answers.items():
        assert answer == answers["npy"], name
    assert answers["npy"]["predicted"] == [i % 10 for i in range(12)]  # the model recognises its own digits


def test_answers_equal_the_services_for_the_same_image_and_seed(local_ray, digits, shipped_model, tmp_path):
    from fastapi.testclient import TestClient
    from servers import wait_ready

    from service.app import create_app
    from service.settings import Settings

    np.save(tmp_path / "d.npy", digits[:4])
    run(tmp_path / "d.npy", tmp_path / "out", shipped_model, seed=11, block_size=3, request=REQUEST, progress=False)
    rows = read_results(tmp_path / "out").to_pylist()
    with TestClient(create_app(Settings(model_dir=shipped_model))) as client:
        wait_ready(client)
        for row in rows:
            assert row["seed"] == image_seed(11, row["row"])
            body = {"images": [digits[row["row"]].tolist()], "seed": row["seed"], **REQUEST, "include": INCLUDE}
            answer = client.post("/v1/classify", json=body).json()["results"][0]
            # the row is the answer flattened, every column of the schema filled but the one kept for a tolerance
            keys = {"id": str(row["row"]), "row": row["row"], "seed": row["seed"]}
            assert row == {**keys, "tolerance_met": None, **flatten(answer)}
            assert row["out_of_distribution_p_value"] == answer["out_of_distribution"]["p_value"]
            assert len(row["critic_probs"]) == 10 and len(row["log_px_y"]) == 10
            assert row["warnings"] == [w["code"] for w in answer["warnings"]]


def test_bad_rows_land_in_the_errors_file_and_the_job_goes_on(local_ray, digits, shipped_model, tmp_path):
    images = [digits[0].tolist(), digits[1].tolist()[:783], b"not a png", digits[2].tolist()]
    column = pa.array([v if isinstance(v, list) else None for v in images], type=pa.list_(pa.int64()))
    pq.write_table(pa.table({"pixels": column}), tmp_path / "mixed.parquet")
    pq.write_table(pa.table({"image": [png_bytes(digits[0]), b"not a png"]}), tmp_path / "pngs.parquet")
    summary = run(tmp_path / "mixed.parquet", tmp_path / "a", shipped_model, request=REQUEST, progress=False)
    assert summary.rows == 4 and summary.errors == 2
    errors = read_results(tmp_path / "a", errors=True).to_pylist()
    assert [e["row"] for e in errors] == [1, 2]
    assert "783" in errors[0]["reason"] and errors[0]["field"] == "images[0]"
    assert read_results(tmp_path / "a").column("row").to_pylist() == [0, 3]
    run(tmp_path / "pngs.parquet", tmp_path / "b", shipped_model, request=REQUEST, progress=False)
    assert "PNG" in read_results(tmp_path / "b", errors=True).column("reason")[0].as_py()


def test_another_job_is_not_mixed_into_an_output(local_ray, digits, shipped_model, tmp_path):
    np.save(tmp_path / "d.npy", digits[:2])
    run(tmp_path / "d.npy", tmp_path / "out", shipped_model, seed=1, request=REQUEST, progress=False)
    again = run(tmp_path / "d.npy", tmp_path / "out", shipped_model, seed=1, request=REQUEST, progress=False)
    assert again.skipped_blocks == again.blocks == 1 and again.rows == 0
    with pytest.raises(ValueError, match="another job"):
        run(tmp_path / "d.npy", tmp_path / "out", shipped_model, seed=2, request=REQUEST, progress=False)
    # an output of an earlier release, whose parts have other columns, is not resumed into the same folder
    shutil.copytree(tmp_path / "out", tmp_path / "earlier")
    earlier = json.loads((tmp_path / "earlier" / "job.json").read_text())
    del earlier["schema_sha256"]
    (tmp_path / "earlier" / "job.json").write_text(json.dumps(earlier))
    with pytest.raises(ValueError, match="schema_sha256"):
        run(tmp_path / "d.npy", tmp_path / "earlier", shipped_model, seed=1, request=REQUEST, progress=False)
    # a model re-exported or re-calibrated in place, or an input rewritten, makes another job too
    model = tmp_path / "model"
    shutil.copytree(shipped_model, model, ignore=shutil.ignore_patterns("checkpoint.pt"))
    run(tmp_path / "d.npy", tmp_path / "other", model, seed=1, request=REQUEST, progress=False)
    manifest = json.loads((model / "manifest.json").read_text())
    (model / "manifest.json").write_text(json.dumps({**manifest, "class_prior": [0.1] * 10}))
    with pytest.raises(ValueError, match="model_sha256"):
        run(tmp_path / "d.npy", tmp_path / "other", model, seed=1, request=REQUEST, progress=False)
    written = (tmp_path / "d.npy").stat().st_mtime_ns
    np.save(tmp_path / "d.npy", digits[2:4])  # as large as before, rewritten...
    os.utime(tmp_path / "d.npy", ns=(written + 10**9, written + 10**9))  # ...a second later, whatever the clock's grain
    with pytest.raises(ValueError, match="input_stamp"):
        run(tmp_path / "d.npy", tmp_path / "out", shipped_model, seed=1, request=REQUEST, progress=False)
    # settings no image could satisfy stop the job before a row is scored, not as one error per row
    for request, block_size, message in (({"num_samples": 1}, 8, "num_samples"), ({}, 0, "block-size")):
        with pytest.raises(ValueError, match=message):
            run(
                tmp_path / "d.npy",
                tmp_path / f"bad-{block_size}",
                shipped_model,
                block_size=block_size,
                request=request,
                progress=False,
            )
        assert not (tmp_path / f"bad-{block_size}").exists()


def _cvae(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    command = [str(Path(sys.executable).parent / "cvae"), "score", *args, "--num-samples", "20", "--no-progress"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, **kwargs)


# Run at the start of every Python process of a `cvae score` given this folder on PYTHONPATH: once a
# worker has written its third part, it waits while the file CVAE_TEST_HOLD exists (the test kills it).
HOLD_AFTER_THREE_PARTS = """
import os
import time
from pathlib import Path

if os.environ.get("CVAE_TEST_HOLD"):
    import batch.output

    write_part = batch.output.write_part

    def held(table, path):
        write_part(table, path)
        hold = Path(os.environ["CVAE_TEST_HOLD"])
        while path.parent.name != "errors" and len(list(path.parent.glob("part-*.parquet"))) >= 3 and hold.exists():
            time.sleep(0.05)

    batch.output.write_part = held
"""


def test_a_killed_run_resumes_to_the_same_output(digits, tmp_path):
    np.save(tmp_path / "d.npy", np.concatenate([digits] * 3))  # 36 images, 18 blocks
    common = ["--block-size", "2", "--workers", "1", "--seed", "5"]
    whole = _cvae(str(tmp_path / "d.npy"), "--out", str(tmp_path / "whole"), *common)
    assert whole.wait(timeout=600) == 0, whole.stdout.read().decode()
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(HOLD_AFTER_THREE_PARTS)
    (tmp_path / "hold").touch()
    path = os.pathsep.join(filter(None, [str(tmp_path / "site"), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "CVAE_TEST_HOLD": str(tmp_path / "hold")}
    killed = _cvae(
        str(tmp_path / "d.npy"), "--out", str(tmp_path / "resumed"), *common, env=env, start_new_session=True
    )
    deadline = time.time() + 300
    while len(list((tmp_path / "resumed").glob("part-*.parquet"))) < 3 and time.time() < deadline:
        assert killed.poll() is None, killed.stdout.read().decode()
        time.sleep(0.2)
    os.killpg(killed.pid, signal.SIGKILL)  # while the worker waits after its third part
    killed.wait()
    done_before = len(list((tmp_path / "resumed").glob("part-*.parquet")))
    assert done_before == 3
    resumed = _cvae(str(tmp_path / "d.npy"), "--out", str(tmp_path / "resumed"), *common)
    output = resumed.stdout.read().decode()
    assert resumed.wait(timeout=600) == 0, output
    skipped = int(re.search(r'"skipped_blocks": (\d+)', output).group(1))
    assert skipped == done_before  # the finished blocks were not scored again
    assert read_results(tmp_path / "resumed").to_pydict() == read_results(tmp_path / "whole").to_pydict()


# the columns of the parts an earlier release wrote, before the row was the answer flattened
EARLIER = [
    ("id", pa.string()),
    ("row", pa.int64()),
    ("seed", pa.int64()),
    ("predicted", pa.int64()),
    ("probability", pa.float64()),
    ("entropy", pa.float64()),
    ("probs", pa.list_(pa.float64())),
    ("log_px", pa.float64()),
    ("log_px_std_error", pa.float64()),
    ("log_px_reliable", pa.bool_()),
    ("ood_score", pa.float64()),
    ("ood_p_value", pa.float64()),
    ("ood_flagged", pa.bool_()),
    ("abstained", pa.bool_()),
    ("abstain_reasons", pa.list_(pa.string())),
    ("critic_probs", pa.list_(pa.float64())),
    ("warnings", pa.list_(pa.string())),
    ("num_samples_used", pa.int64()),
]


def test_parts_of_an_earlier_release_read_as_they_were_written(tmp_path):
    row = {name: None for name, _ in EARLIER} | {"id": "0", "row": 0, "ood_p_value": 0.5, "num_samples_used": 60}
    without_critic = pa.schema([f for f in EARLIER if f[0] != "critic_probs"])  # written before critic_probs
    pq.write_table(pa.Table.from_pylist([row], schema=pa.schema(EARLIER)), tmp_path / "part-000000.parquet")
    pq.write_table(pa.Table.from_pylist([row | {"row": 1}], schema=without_critic), tmp_path / "part-000001.parquet")
    table = read_results(tmp_path)
    assert table.column_names == [name for name, _ in EARLIER]
    assert table.column("ood_p_value").to_pylist() == [0.5, 0.5] and table.column("row").to_pylist() == [0, 1]
    assert table.column("critic_probs").to_pylist() == [None, None]


def test_the_results_schema_is_the_answers_and_a_part_lacking_a_column_reads_it_null(tmp_path):
    names = results_schema().names
    assert names[:6] == ["id", "row", "seed", "predicted", "probability", "probs"]
    assert {"out_of_distribution_flagged", "elbo_kl_z", "critic_probs", "entropy"} <= set(names)
    assert "x" not in names and "out_of_distribution" not in names
    shorter = pa.schema([f for f in results_schema() if f.name != "critic_probs"])
    pq.write_table(pa.Table.from_pylist([{"id": "0", "row": 0}], schema=shorter), tmp_path / "part-000000.parquet")
    table = read_results(tmp_path)
    assert table.schema == results_schema() and table.column("critic_probs").to_pylist() == [None]


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float = 180) -> None:
    import socket

    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, process.stdout.read().decode()
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError("the Ray head never listened")


def test_a_ray_cluster_by_address(digits, shipped_model, tmp_path):
    from servers import free_port

    port = free_port()
    # Ray clusters check a token (token authentication): the cluster and its client share one made here
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": os.urandom(16).hex()}
    head = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--head",
        "--block",  # in the foreground, in a session of its own: stopping it stops this cluster and no other Ray
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=2",
        "--include-dashboard=false",
        "--disable-usage-stats",
    ]
    cluster = subprocess.Popen(head, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_port(port, cluster)
        np.save(tmp_path / "d.npy", digits[:6])
        address = f"127.0.0.1:{port}"
        common = ["--block-size", "3", "--seed", "7"]
        on_cluster = _cvae(
            str(tmp_path / "d.npy"), "--out", str(tmp_path / "cluster"), "--address", address, *common, env=env
        )
        assert on_cluster.wait(timeout=600) == 0, on_cluster.stdout.read().decode()
        local = _cvae(str(tmp_path / "d.npy"), "--out", str(tmp_path / "local"), *common)
        assert local.wait(timeout=600) == 0, local.stdout.read().decode()
        assert read_results(tmp_path / "cluster").to_pydict() == read_results(tmp_path / "local").to_pydict()
    finally:
        os.killpg(cluster.pid, signal.SIGTERM)
        try:
            cluster.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.pid, signal.SIGKILL)
            cluster.wait()
