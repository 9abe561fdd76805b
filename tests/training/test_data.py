import gzip
import hashlib
import http.server
import os
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from training.data import FILES, IMAGE_MAGIC, LABEL_MAGIC, MnistDataError, download, load_mnist


def write_idx(path: Path, magic: int, count: int, labels_max: int = 9, compress: bool = True, rows: int = 28):
    if magic == IMAGE_MAGIC:
        header = struct.pack(">IIII", magic, count, rows, 28)
        body = np.random.default_rng(0).integers(0, 256, count * rows * 28, dtype=np.uint8).tobytes()
    else:
        header = struct.pack(">II", magic, count)
        labels = np.arange(count) % 10
        labels[-1] = labels_max
        body = labels.astype(np.uint8).tobytes()
    raw = header + body
    path.write_bytes(gzip.compress(raw) if compress else raw)


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    """A folder of valid IDX files, with counts shrunk so the test stays small."""
    counts = {
        "train-images-idx3-ubyte": 60,
        "train-labels-idx1-ubyte": 60,
        "t10k-images-idx3-ubyte": 10,
        "t10k-labels-idx1-ubyte": 10,
    }
    monkeypatch.setattr("training.data.FILES", {n: (FILES[n][0], counts[n], FILES[n][2]) for n in FILES})
    for name, count in counts.items():
        write_idx(tmp_path / f"{name}.gz", FILES[name][0], count)
    return tmp_path


def test_reads_gz_and_raw_files(fake_mnist):
    (fake_mnist / "t10k-images-idx3-ubyte.gz").unlink()
    write_idx(fake_mnist / "t10k-images-idx3-ubyte", IMAGE_MAGIC, 10, compress=False)
    data = load_mnist(fake_mnist)
    assert data.train_x.shape == (60, 784) and data.test_x.shape == (10, 784)
    assert data.train_y.max() == 9


def test_missing_directory_says_how_to_get_the_data(tmp_path):
    with pytest.raises(MnistDataError, match="cvae download"):
        load_mnist(tmp_path / "nowhere")


def test_missing_file_is_named(fake_mnist):
    (fake_mnist / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(MnistDataError, match="t10k-labels-idx1-ubyte.*missing.*10 items"):
        load_mnist(fake_mnist)


def test_wrong_magic_is_named(fake_mnist):
    write_idx(fake_mnist / "train-images-idx3-ubyte.gz", LABEL_MAGIC, 60)
    with pytest.raises(MnistDataError, match="train-images-idx3-ubyte.gz has magic number 2049, expected 2051"):
        load_mnist(fake_mnist)


def test_wrong_count_is_named(fake_mnist):
    write_idx(fake_mnist / "train-labels-idx1-ubyte.gz", LABEL_MAGIC, 59)
    with pytest.raises(MnistDataError, match="holds 59 items, expected 60"):
        load_mnist(fake_mnist)


def test_wrong_shape_is_named(fake_mnist):
    write_idx(fake_mnist / "t10k-images-idx3-ubyte.gz", IMAGE_MAGIC, 10, rows=27)
    with pytest.raises(MnistDataError, match="27x28 images, expected 28x28"):
        load_mnist(fake_mnist)


def test_label_out_of_range_is_named(fake_mnist):
    write_idx(fake_mnist / "t10k-labels-idx1-ubyte.gz", LABEL_MAGIC, 10, labels_max=11)
    with pytest.raises(MnistDataError, match="label 11, expected labels 0..9"):
        load_mnist(fake_mnist)


def test_truncated_and_corrupt_files_are_named(fake_mnist):
    path = fake_mnist / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-5]))
    with pytest.raises(MnistDataError, match="expected 47056"):
        load_mnist(fake_mnist)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(MnistDataError, match="train-images-idx3-ubyte.gz cannot be read"):
        load_mnist(fake_mnist)


@pytest.fixture
def http_mirror(tmp_path):
    """A local HTTP server over tmp_path/www; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(www), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_download_tries_mirrors_and_verifies_md5(http_mirror, tmp_path):
    www, url = http_mirror
    md5s = {}
    for name in FILES:
        payload = f"payload of {name}".encode()
        (www / f"{name}.gz").write_bytes(payload)
        md5s[name] = hashlib.md5(payload).hexdigest()
    dead_mirror = url + "missing/"
    saved = download(tmp_path / "data", mirrors=(dead_mirror, url), md5s=md5s, timeout=5)
    assert [p.name for p in saved] == [f"{n}.gz" for n in FILES]
    assert (tmp_path / "data" / "train-images-idx3-ubyte.gz").read_bytes() == b"payload of train-images-idx3-ubyte"


def test_download_rejects_a_bad_checksum_and_keeps_nothing(http_mirror, tmp_path):
    www, url = http_mirror
    (www / "t10k-labels-idx1-ubyte.gz").write_bytes(b"tampered")
    with pytest.raises(
        MnistDataError, match="t10k-labels-idx1-ubyte.gz.*MD5 .*expected ec29112dd5afa0611ce80d1b7f02629c"
    ):
        download(tmp_path / "data", mirrors=(url,), md5s={"t10k-labels-idx1-ubyte": FILES["t10k-labels-idx1-ubyte"][2]})
    assert not list((tmp_path / "data").iterdir())


def test_download_accepts_the_canonical_files(http_mirror, tmp_path):
    """The three canonical files in MNIST_DIR pass the published MD5s when served over HTTP."""
    mnist_dir = os.environ.get("MNIST_DIR")
    if not mnist_dir:
        pytest.skip("MNIST_DIR is not set: point it at a folder with the MNIST IDX files")
    www, url = http_mirror
    canonical = ["train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    for name in canonical:
        (www / f"{name}.gz").write_bytes((Path(mnist_dir) / f"{name}.gz").read_bytes())
    saved = download(tmp_path / "data", mirrors=(url,), md5s={n: FILES[n][2] for n in canonical})
    assert len(saved) == 3


def test_real_mnist_is_read_and_validated():
    mnist_dir = os.environ.get("MNIST_DIR")
    if not mnist_dir:
        pytest.skip("MNIST_DIR is not set: point it at a folder with the MNIST IDX files")
    data = load_mnist(mnist_dir)
    assert data.train_x.shape == (60000, 784) and data.test_x.shape == (10000, 784)
    assert np.bincount(data.train_y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_the_data_dir_is_the_flag_else_mnist_dir_else_an_error_naming_both(tmp_path, monkeypatch):
    from training.data import configured_data_dir, data_dir

    monkeypatch.setenv("MNIST_DIR", str(tmp_path / "from-env"))
    assert data_dir(tmp_path / "given") == tmp_path / "given"
    assert data_dir() == tmp_path / "from-env"
    monkeypatch.delenv("MNIST_DIR")
    assert configured_data_dir() is None
    with pytest.raises(MnistDataError, match="--data-dir DIR or set MNIST_DIR.*cvae download"):
        data_dir()


def test_cvae_download_fetches_from_the_mirrors_given(http_mirror, tmp_path, monkeypatch, capsys):
    from training.cli import main

    www, url = http_mirror
    for name in FILES:
        (www / f"{name}.gz").write_bytes(f"payload of {name}".encode())
    served = {name: hashlib.md5(f"payload of {name}".encode()).hexdigest() for name in FILES}
    monkeypatch.setattr("training.data.FILES", {n: (*FILES[n][:2], served[n]) for n in FILES})
    assert main(["download", "--data-dir", str(tmp_path / "data"), "--mirror", url + "missing/", "--mirror", url]) == 0
    assert capsys.readouterr().out.splitlines() == [f"ok {tmp_path / 'data' / name}.gz" for name in FILES]
    assert (tmp_path / "data" / "t10k-labels-idx1-ubyte.gz").read_bytes() == b"payload of t10k-labels-idx1-ubyte"


def test_cvae_download_names_a_local_file_that_failed_its_checksum(http_mirror, tmp_path, monkeypatch, capsys):
    """A folder that holds the files, one of them not the published one, and no mirror that has it."""
    from training.cli import main

    www, url = http_mirror
    data = tmp_path / "data"
    data.mkdir()
    for name in FILES:
        (data / f"{name}.gz").write_bytes(f"payload of {name}".encode())
    served = {name: hashlib.md5(f"payload of {name}".encode()).hexdigest() for name in FILES}
    monkeypatch.setattr("training.data.FILES", {n: (*FILES[n][:2], served[n]) for n in FILES})
    (data / "train-labels-idx1-ubyte.gz").write_bytes(b"a copy from elsewhere")
    assert main(["download", "--data-dir", str(data), "--mirror", url]) == 2
    error = capsys.readouterr().err
    assert f"{data / 'train-labels-idx1-ubyte.gz'} failed its checksum" in error
    assert (
        f"expected {served['train-labels-idx1-ubyte']}" in error and "Delete it and run `cvae download` again" in error
    )
    assert "train-labels-idx1-ubyte.gz: HTTP Error 404" in error  # and what the mirror said
    assert "train-images" not in error  # the files that pass are not named
    (www / "train-labels-idx1-ubyte.gz").write_bytes(b"payload of train-labels-idx1-ubyte")
    assert main(["download", "--data-dir", str(data), "--mirror", url]) == 0  # a mirror that has it replaces it
    assert (data / "train-labels-idx1-ubyte.gz").read_bytes() == b"payload of train-labels-idx1-ubyte"
