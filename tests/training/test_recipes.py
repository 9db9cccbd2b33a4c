"""Built-in recipes with real torch: synthetic/mnist/csv/text datasets (paths and a local HTTP server) and models."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from app.training.catalog import BUILTIN_MODELS
from app.training.fetch import Network
from app.training.recipes import DataError, RecipeError
from app.training.recipes.datasets import DataInfo, load_dataset
from app.training.recipes.models import build_model, loss_and_correct
from app.training.recipes.plugins import model_recipe
from app.training.sources import SourcePolicy

DATA_HOST = "data.test"  # resolved by the tests' Network to a documentation address, dialled on loopback
TEST_NET = Network(resolve=lambda host, port: ["192.0.2.7"] if host == DATA_HOST else [],
                   connect=lambda address, timeout: socket.create_connection(("127.0.0.1", address[1]), timeout))


def load(name: str, options: dict[str, Any], cache_dir: Path, *, split: float = 0.2, seed: int = 0,
         want: str | None = None, log: Any = None,
         policy: SourcePolicy | None = None) -> tuple[TensorDataset, TensorDataset, DataInfo]:
    """load_dataset with test defaults: the cache dir's parent is the allowed folder, DATA_HOST the allowed host."""
    policy = policy or SourcePolicy(dirs=(Path(cache_dir).parent,), hosts=(DATA_HOST,))
    return load_dataset(name, options, cache_dir=cache_dir, validation_split=split, seed=seed, want=want,
                        log=log or (lambda _msg: None), policy=policy, network=TEST_NET)


def synthetic(**options: Any) -> dict[str, Any]:
    """Small synthetic options."""
    base: dict[str, Any] = {"kind": "vector", "samples": 64, "features": 8, "classes": 4, "seq_len": 12, "vocab": 10,
                            "noise": 0.5, "seed": 0}
    base.update(options)
    return base


def train(model_name: str, model: torch.nn.Module, data: TensorDataset, *, steps: int, lr: float = 1e-2,
          batch: int = 64) -> list[float]:
    """Adam for a number of steps over shuffled batches; the losses."""
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    losses: list[float] = []
    model.train()
    while len(losses) < steps:
        for inputs, targets in DataLoader(data, batch_size=batch, shuffle=True):
            loss, _, _ = loss_and_correct(model_name, model(inputs), targets)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            if len(losses) >= steps:
                break
    return losses


def accuracy(model_name: str, model: torch.nn.Module, data: TensorDataset) -> float:
    """Share of correct predictions."""
    model.eval()
    inputs, targets = data.tensors
    with torch.no_grad():
        _, correct, counted = loss_and_correct(model_name, model(inputs), targets)
    return correct / counted


# --- synthetic -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["vector", "image", "tokens"])
def test_synthetic_is_deterministic_per_seed(tmp_path: Path, kind: str) -> None:
    a_train, a_val, _ = load("synthetic", synthetic(kind=kind, seed=1), tmp_path)
    b_train, b_val, _ = load("synthetic", synthetic(kind=kind, seed=1), tmp_path)
    c_train, _, _ = load("synthetic", synthetic(kind=kind, seed=2), tmp_path)
    for x, y in zip(a_train.tensors + a_val.tensors, b_train.tensors + b_val.tensors, strict=False):
        assert torch.equal(x, y)
    assert not torch.equal(a_train.tensors[0], c_train.tensors[0])


def test_synthetic_shapes_and_dtypes(tmp_path: Path) -> None:
    train_set, val, info = load("synthetic", synthetic(kind="vector"), tmp_path)
    assert info == DataInfo("vector", (8,), 4)
    assert train_set.tensors[0].shape == (51, 8) and train_set.tensors[0].dtype == torch.float32
    assert train_set.tensors[1].dtype == torch.int64 and set(train_set.tensors[1].tolist()) <= {0, 1, 2, 3}
    assert len(val) == 13

    train_set, val, info = load("synthetic", synthetic(kind="image"), tmp_path)
    assert info == DataInfo("image", (1, 28, 28), 4)
    images = torch.cat([train_set.tensors[0], val.tensors[0]])
    assert images.shape == (64, 1, 28, 28) and images.dtype == torch.float32
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0

    train_set, val, info = load("synthetic", synthetic(kind="image"), tmp_path, want="vector")
    assert info == DataInfo("vector", (784,), 4)
    assert train_set.tensors[0].shape == (51, 784)

    train_set, val, info = load("synthetic", synthetic(kind="tokens"), tmp_path)
    assert info == DataInfo("tokens", (12,), 10)
    inputs, targets = train_set.tensors
    assert inputs.shape == targets.shape == (51, 12)
    assert inputs.dtype == targets.dtype == torch.int64
    assert int(inputs.max()) < 10 and int(inputs.min()) >= 0
    assert torch.equal(inputs[:, 1:], targets[:, :-1])


def test_split_sizes_and_determinism(tmp_path: Path) -> None:
    options = synthetic(samples=100)
    train_a, val_a, _ = load("synthetic", options, tmp_path, split=0.25, seed=3)
    train_b, val_b, _ = load("synthetic", options, tmp_path, split=0.25, seed=3)
    train_c, val_c, _ = load("synthetic", options, tmp_path, split=0.25, seed=4)
    assert (len(train_a), len(val_a)) == (75, 25)
    assert torch.equal(val_a.tensors[0], val_b.tensors[0]) and torch.equal(train_a.tensors[0], train_b.tensors[0])
    assert not torch.equal(val_a.tensors[0], val_c.tensors[0])
    # train and validation partition the data: together they hold every sample exactly once
    everything = torch.cat([train_a.tensors[0], val_a.tensors[0]])
    assert torch.unique(everything, dim=0).shape[0] == 100
    _, tiny_val, _ = load("synthetic", synthetic(samples=16), tmp_path, split=0.01)
    assert len(tiny_val) == 1
    _, zero_val, _ = load("synthetic", synthetic(samples=16), tmp_path, split=0.0)
    assert len(zero_val) == 1
    with pytest.raises(RecipeError, match="validation_split"):
        load("synthetic", synthetic(), tmp_path, split=1.5)


def test_unknown_dataset_and_bad_options(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="unknown dataset 'imagenet'"):
        load("imagenet", {}, tmp_path)
    with pytest.raises(RecipeError, match="unknown option"):
        load("synthetic", synthetic(colour="red"), tmp_path)
    with pytest.raises(RecipeError, match="'samples'"):
        load("synthetic", synthetic(samples="many"), tmp_path)
    with pytest.raises(RecipeError, match="'images' is required"):
        load("mnist", {}, tmp_path)


# --- training on synthetic data ------------------------------------------------------------------------------------

def test_mlp_learns_synthetic_vectors(tmp_path: Path) -> None:
    train_set, val, info = load("synthetic", synthetic(samples=1024, features=16, noise=1.0), tmp_path, want="vector")
    torch.manual_seed(0)
    model = build_model("mlp", {"hidden": [32], "dropout": 0.0}, info)
    train("mlp", model, train_set, steps=200)
    assert accuracy("mlp", model, val) > 0.8


def test_cnn_learns_synthetic_images(tmp_path: Path) -> None:
    train_set, val, info = load("synthetic", synthetic(kind="image", samples=512), tmp_path, want="image")
    torch.manual_seed(0)
    model = build_model("cnn", {"channels": [4, 8], "hidden": 32}, info)
    train("cnn", model, train_set, steps=3 * (len(train_set) // 64 + 1), lr=3e-3)
    assert accuracy("cnn", model, val) > 0.6


def test_char_lstm_loss_decreases_on_synthetic_tokens(tmp_path: Path) -> None:
    train_set, _, info = load("synthetic", synthetic(kind="tokens", samples=256, seq_len=16, vocab=12), tmp_path)
    torch.manual_seed(0)
    model = build_model("char_lstm", {"embedding": 16, "hidden": 32, "layers": 1}, info)
    losses = train("char_lstm", model, train_set, steps=60)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


# --- mnist ---------------------------------------------------------------------------------------------------------

def idx_images(n: int, rows: int = 28, cols: int = 28, magic: int = 0x00000803, seed: int = 0) -> bytes:
    """An IDX images file of n random uint8 images."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(n, rows, cols), dtype=np.uint8)
    return struct.pack(">IIII", magic, n, rows, cols) + pixels.tobytes()


def idx_labels(n: int, magic: int = 0x00000801) -> bytes:
    """An IDX labels file of n labels cycling over 0..9."""
    return struct.pack(">II", magic, n) + bytes(i % 10 for i in range(n))


def sha(data: bytes) -> str:
    """Hex sha256."""
    return hashlib.sha256(data).hexdigest()


def test_mnist_from_plain_and_gzipped_paths(tmp_path: Path) -> None:
    images, labels = idx_images(64), idx_labels(64)
    (tmp_path / "img").write_bytes(images)
    (tmp_path / "lbl").write_bytes(labels)
    (tmp_path / "img.gz").write_bytes(gzip.compress(images))
    (tmp_path / "lbl.gz").write_bytes(gzip.compress(labels))
    plain = load("mnist", {"images": str(tmp_path / "img"), "labels": str(tmp_path / "lbl")}, tmp_path / "cache",
                 want="image")
    packed = load("mnist", {"images": str(tmp_path / "img.gz"), "labels": str(tmp_path / "lbl.gz"),
                            "images_sha256": sha(gzip.compress(images))}, tmp_path / "cache", want="image")
    train_set, val, info = plain
    assert info == DataInfo("image", (1, 28, 28), 10)
    assert train_set.tensors[0].shape == (51, 1, 28, 28) and train_set.tensors[0].dtype == torch.float32
    assert train_set.tensors[1].dtype == torch.int64
    x = torch.cat([train_set.tensors[0], val.tensors[0]])
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    for a, b in zip(plain[0].tensors + plain[1].tensors, packed[0].tensors + packed[1].tensors, strict=False):
        assert torch.equal(a, b)
    # the pixel values come through unchanged: a sample matches its source image
    all_x = torch.cat([train_set.tensors[0], val.tensors[0]]).reshape(64, -1)
    source = torch.from_numpy(np.frombuffer(images, np.uint8, offset=16).reshape(64, -1).astype(np.float32) / 255)
    assert all(any(torch.equal(row, s) for s in source) for row in all_x[:5])

    vec_train, _, vec_info = load("mnist", {"images": str(tmp_path / "img"), "labels": str(tmp_path / "lbl")},
                                  tmp_path / "cache", want="vector")
    assert vec_info == DataInfo("vector", (784,), 10)
    assert vec_train.tensors[0].shape == (51, 784)


def test_mnist_path_problems(tmp_path: Path) -> None:
    def write(name: str, data: bytes) -> str:
        (tmp_path / name).write_bytes(data)
        return str(tmp_path / name)

    labels = write("labels", idx_labels(8))
    cases = [
        ({"images": write("short", b"\x00\x00\x08"), "labels": labels}, "short: truncated IDX header"),
        ({"images": write("magic", idx_images(8, magic=0x00000801)), "labels": labels}, "magic: wrong magic number"),
        ({"images": write("size", idx_images(8, rows=32, cols=32)), "labels": labels}, "size: images are not 28x28"),
        ({"images": write("cut", idx_images(8)[:-5]), "labels": labels},
         "cut: the number of images in the header does not match"),
        ({"images": write("nine", idx_images(9)), "labels": labels}, "count mismatch: .*nine and .*labels hold different"),
        ({"images": write("ok", idx_images(8)), "labels": write("lmagic", idx_labels(8, magic=0x803))},
         "lmagic: wrong magic number"),
        ({"images": write("badgz.gz", b"\x1f\x8b" + b"junk"), "labels": labels}, "not a valid gzip file"),
    ]
    for options, message in cases:
        with pytest.raises(RecipeError, match=message):
            load("mnist", options, tmp_path / "cache")
    with pytest.raises(DataError, match="file not found"):
        load("mnist", {"images": str(tmp_path / "missing"), "labels": labels}, tmp_path / "cache")
    with pytest.raises(DataError, match="sha256 mismatch"):
        load("mnist", {"images": str(tmp_path / "ok"), "labels": labels, "labels_sha256": "0" * 64},
             tmp_path / "cache")


class FileServer:
    """A local HTTP server on 127.0.0.1 serving in-memory files and counting requests per path."""

    def __init__(self, files: dict[str, bytes]) -> None:
        """Start serving in a thread on a random port."""
        self.files = files
        self.requests: dict[str, int] = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                """Serve a file or 404."""
                server.requests[self.path] = server.requests.get(self.path, 0) + 1
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "not found")
                    return
                self.send_response(200)
                if not self.path.endswith("-nolength"):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                """Quiet."""

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        """The URL of a served path."""
        return f"http://{DATA_HOST}:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        """Stop the server."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def file_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FileServer]:
    """A FileServer with MNIST-format files; proxies bypassed so requests stay on this machine."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    images, labels = idx_images(64, seed=1), idx_labels(64)
    server = FileServer({"/train-images.gz": gzip.compress(images), "/train-labels": labels,
                         "/labels-nolength": labels})
    try:
        yield server
    finally:
        server.close()


def test_mnist_by_url_is_downloaded_once_then_cached(tmp_path: Path, file_server: FileServer,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="app.training.recipes.datasets")
    cache = tmp_path / "cache"
    images_gz, labels = file_server.files["/train-images.gz"], file_server.files["/train-labels"]
    options = {"images": file_server.url("/train-images.gz"), "images_sha256": sha(images_gz),
               "labels": file_server.url("/train-labels"), "labels_sha256": sha(labels)}
    messages: list[str] = []
    train_set, val, info = load("mnist", options, cache, want="image", log=messages.append)
    assert info == DataInfo("image", (1, 28, 28), 10) and len(train_set) + len(val) == 64
    assert file_server.requests == {"/train-images.gz": 1, "/train-labels": 1}
    assert sorted(p.name for p in cache.iterdir()) == sorted([sha(images_gz), sha(labels)])
    assert any("downloading" in m and "100%" in m for m in caplog.messages)  # progress: this machine's log
    assert any(m.startswith("downloaded ") and "sha256 verified" in m for m in messages)

    again = load("mnist", options, cache, want="image")
    assert file_server.requests == {"/train-images.gz": 1, "/train-labels": 1}
    for a, b in zip(train_set.tensors + val.tensors, again[0].tensors + again[1].tensors, strict=False):
        assert torch.equal(a, b)
    with pytest.raises(DataError, match="could not fetch"):  # a host taken off the list gets no cached copy either
        load("mnist", options, cache, want="image", policy=SourcePolicy(dirs=(tmp_path,), hosts=("other.test",)))

    # a size the server does not announce is logged once with the total
    messages.clear()
    options["labels"] = file_server.url("/labels-nolength")
    (cache / sha(labels)).unlink()
    load("mnist", options, cache, log=messages.append)
    assert any(f"({len(labels)} bytes, sha256 verified)" in m for m in messages)


def test_mnist_url_failures_read_the_same_and_the_cause_is_logged_locally(
        tmp_path: Path, file_server: FileServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mismatch, HTTP error, refused connection, timeout and a host off the allowlist: one text, the cause only logged."""
    from app.training.recipes import datasets

    monkeypatch.setattr(datasets, "DOWNLOAD_TIMEOUT_S", 0.5)
    silent = socket.socket()  # accepts connections (backlog) but never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    cache = tmp_path / "cache"
    labels = file_server.files["/train-labels"]
    wrong = {"images": file_server.url("/train-images.gz"), "images_sha256": "ab" * 32,
             "labels": file_server.url("/train-labels"), "labels_sha256": sha(labels)}
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://{DATA_HOST}:{sock.getsockname()[1]}/images"
    cases = [(file_server.url("/train-images.gz"), "sha256 mismatch: expected abab"),
             (file_server.url("/nothing-here"), "HTTP 404"),
             (closed, "ConnectionRefusedError"),
             (f"http://{DATA_HOST}:{silent.getsockname()[1]}/slow", "timed out"),
             (f"http://other.test:{file_server.httpd.server_address[1]}/train-images.gz", "not one of the farm's dataset hosts")]
    texts = []
    for url, cause in cases:
        caplog.clear()
        with pytest.raises(DataError) as raised:
            load("mnist", dict(wrong, images=url), cache)
        assert str(raised.value) == f"could not fetch {url} (see this machine's log)"
        texts.append(str(raised.value).replace(url, "URL"))
        assert any(cause in m for m in caplog.messages), caplog.messages
        assert list(cache.iterdir()) == []
    silent.close()
    assert len(set(texts)) == 1

    with pytest.raises(RecipeError, match="sha256 is required"):
        load("mnist", {"images": file_server.url("/train-images.gz"), "labels": str(tmp_path / "x")}, cache)


# --- csv -----------------------------------------------------------------------------------------------------------

def test_csv_string_labels_and_standardised_features(tmp_path: Path) -> None:
    rows = ["a,species,b"] + [f"{i},{['setosa', 'virginica', 'versicolor'][i % 3]},{i * 2 + 1}" for i in range(30)]
    path = tmp_path / "iris.csv"
    path.write_text("\n".join(rows) + "\n")
    train_set, val, info = load("csv", {"source": str(path), "label_column": "species"}, tmp_path)
    assert info == DataInfo("vector", (2,), 3)
    x = torch.cat([train_set.tensors[0], val.tensors[0]])
    y = torch.cat([train_set.tensors[1], val.tensors[1]])
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.allclose(x.mean(dim=0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(x.std(dim=0, unbiased=False), torch.ones(2), atol=1e-5)
    # sorted labels: setosa 0, versicolor 1, virginica 2; a = i so (a mod 3) gives the label back
    a = (x[:, 0] * float(np.std(np.arange(30))) + 14.5).round().long()
    assert torch.equal(y, torch.tensor([0, 2, 1])[a % 3])


def test_csv_integer_labels_sort_numerically(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    path.write_text("x,label\n" + "".join(f"{i},{[2, 10, 9][i % 3]}\n" for i in range(12)))
    train_set, val, info = load("csv", {"source": str(path), "label_column": "label"}, tmp_path)
    assert info.n_classes == 3
    x = torch.cat([train_set.tensors[0], val.tensors[0]])
    y = torch.cat([train_set.tensors[1], val.tensors[1]])
    order = x[:, 0].argsort()
    assert y[order].tolist() == [0, 2, 1] * 4  # 2 → 0, 9 → 1, 10 → 2


def test_csv_problems(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("height,weight,kind\n1,2,a\n3,4,b\n")
    with pytest.raises(RecipeError, match=r"label column 'label' is not one of the header's 3 columns") as raised:
        load("csv", {"source": str(path), "label_column": "label"}, tmp_path)
    assert "height" not in str(raised.value) and "weight" not in str(raised.value)
    path.write_text("height,weight,kind\n1,2,a\n3,heavy,b\n")
    with pytest.raises(RecipeError, match=r"column 2, row 3: the value is not a finite number") as raised:
        load("csv", {"source": str(path), "label_column": "kind"}, tmp_path)
    assert "heavy" not in str(raised.value) and "weight" not in str(raised.value)
    path.write_text("height,kind\n1,a\n2\n")
    with pytest.raises(RecipeError, match="row 3 has 1 cells"):
        load("csv", {"source": str(path), "label_column": "kind"}, tmp_path)
    path.write_text("")
    with pytest.raises(RecipeError, match="empty"):
        load("csv", {"source": str(path), "label_column": "kind"}, tmp_path)


# --- text ----------------------------------------------------------------------------------------------------------

def test_text_vocabulary_and_shifted_targets(tmp_path: Path) -> None:
    text = "hello world, héllo wörld! " * 8
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    train_set, val, info = load("text", {"source": str(path), "seq_len": 7}, tmp_path)
    assert info.kind == "tokens" and info.input_shape == (7,)
    assert info.vocab == tuple(sorted(set(text))) and info.n_classes == len(info.vocab)
    assert len(train_set) + len(val) == len(text) // 8
    inputs, targets = train_set.tensors
    assert inputs.dtype == targets.dtype == torch.int64 and inputs.shape == targets.shape
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    windows = {text[i:i + 8] for i in range(0, len(text) // 8 * 8, 8)}
    for row_in, row_out in zip(inputs.tolist(), targets.tolist(), strict=False):
        decoded = "".join(info.vocab[i] for i in row_in) + info.vocab[row_out[-1]]
        assert decoded in windows


def test_text_problems(tmp_path: Path) -> None:
    path = tmp_path / "short.txt"
    path.write_text("abc")
    with pytest.raises(RecipeError, match="fewer than seq_len"):
        load("text", {"source": str(path), "seq_len": 8}, tmp_path)
    path.write_bytes(b"abc\xff\xfe" * 10)
    with pytest.raises(RecipeError, match="not UTF-8"):
        load("text", {"source": str(path), "seq_len": 4}, tmp_path)


# --- models --------------------------------------------------------------------------------------------------------

def test_models_output_shapes_and_determinism() -> None:
    vector, image = DataInfo("vector", (8,), 3), DataInfo("image", (1, 28, 28), 10)
    tokens = DataInfo("tokens", (12,), 20)
    mlp_options = {"hidden": [16, 8], "dropout": 0.1}
    assert build_model("mlp", mlp_options, vector)(torch.zeros(5, 8)).shape == (5, 3)
    assert build_model("mlp", mlp_options, image)(torch.zeros(5, 1, 28, 28)).shape == (5, 10)
    assert build_model("cnn", {"channels": [2, 4], "hidden": 8}, image)(torch.zeros(5, 1, 28, 28)).shape == (5, 10)
    lstm = build_model("char_lstm", {"embedding": 4, "hidden": 8, "layers": 2}, tokens)
    outputs = lstm(torch.zeros(5, 12, dtype=torch.int64))
    assert outputs.shape == (5, 12, 20)
    loss, correct, counted = loss_and_correct("char_lstm", outputs, torch.zeros(5, 12, dtype=torch.int64))
    assert loss.dim() == 0 and counted == 60 and 0 <= correct <= 60
    # defaults come from the catalog when options are left out
    assert build_model("mlp", {}, vector)(torch.zeros(2, 8)).shape == (2, 3)

    torch.manual_seed(5)
    first = build_model("cnn", {"channels": [2, 4], "hidden": 8}, image).state_dict()
    torch.manual_seed(5)
    second = build_model("cnn", {"channels": [2, 4], "hidden": 8}, image).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_model_mismatches() -> None:
    vector, image = DataInfo("vector", (784,), 10), DataInfo("image", (1, 28, 28), 10)
    tokens = DataInfo("tokens", (12,), 20)
    with pytest.raises(RecipeError, match="unknown model 'vit'"):
        build_model("vit", {}, vector)
    with pytest.raises(RecipeError, match="takes image data, but the dataset gives vector"):
        build_model("cnn", {}, vector)
    with pytest.raises(RecipeError, match="needs \\(1, 28, 28\\) images"):
        build_model("cnn", {}, DataInfo("image", (3, 32, 32), 10))
    with pytest.raises(RecipeError, match="exactly 2"):
        build_model("cnn", {"channels": [4, 8, 16]}, image)
    with pytest.raises(RecipeError, match="takes tokens data"):
        build_model("char_lstm", {}, image)
    with pytest.raises(RecipeError, match="takes image or vector data, but the dataset gives tokens"):
        build_model("mlp", {}, tokens)
    with pytest.raises(RecipeError, match="'dropout'"):
        build_model("mlp", {"dropout": 2.0}, vector)
    with pytest.raises(RecipeError, match="do not match"):
        loss_and_correct("mlp", torch.zeros(4, 3), torch.zeros(5, dtype=torch.int64))


def test_builtin_models_declare_the_input_kind_they_are_fed_and_their_loss() -> None:
    """The catalog, not the model's name, says what a built-in model is fed and whether its loss is per position."""
    assert {name: recipe.input_kind for name, recipe in BUILTIN_MODELS.items()} == \
        {"mlp": "vector", "cnn": "image", "char_lstm": "tokens", "transformer": "tokens", "resnet": "image"}
    assert [name for name, recipe in BUILTIN_MODELS.items() if recipe.per_position] == ["char_lstm", "transformer"]
    for name, recipe in BUILTIN_MODELS.items():
        assert recipe.input_kind in recipe.data, name
        resolved = model_recipe(name)
        assert (resolved.input_kind, resolved.per_position) == (recipe.input_kind, recipe.per_position)
