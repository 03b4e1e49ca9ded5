"""CIFAR-10 from a local folder in the original python-pickle format (``cifar-10-batches-py``)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from .base import ImageSet, Splits
from .safe_pickle import safe_load

__all__ = ["load_cifar10"]

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as fh:
            entry = safe_load(fh, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError) as exc:
        raise ValueError(f"{path} is not a CIFAR-10 python batch: {exc}") from None
    if not isinstance(entry, dict):
        raise ValueError(f"{path} is not a CIFAR-10 python batch (a {type(entry).__name__})")
    # Written by Python 2, so keys come back as bytes; accept str keys too.
    entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if "data" not in entry or "labels" not in entry:
        raise ValueError(f"{path} lacks 'data'/'labels' entries (keys: {sorted(entry)})")
    data = np.asarray(entry["data"], dtype=np.uint8)
    labels = np.asarray(entry["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise ValueError(
            f"{path}: data {data.shape} / labels {labels.shape} are not CIFAR-10 shaped"
        )
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(root: str | Path | None) -> Splits:
    """CIFAR-10 50k/10k as uint8 (N, 3, 32, 32) images from ``root``.

    Args:
        root: the ``cifar-10-batches-py`` folder (``data_batch_1..5``, ``test_batch``) or its
            parent.

    >>> load_cifar10(None)
    Traceback (most recent call last):
    ...
    FileNotFoundError: CIFAR-10 needs data.root: ...
    """
    if root is None:
        raise FileNotFoundError(
            "CIFAR-10 needs data.root: a local cifar-10-batches-py folder (nothing is downloaded)"
        )
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"CIFAR-10 data folder {root} does not exist")
    if not (root / TEST_BATCH).is_file() and (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    missing = [n for n in (*TRAIN_BATCHES, TEST_BATCH) if not (root / n).is_file()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 folder {root} lacks {missing}")
    train = [_read_batch(root / name) for name in TRAIN_BATCHES]
    xte, yte = _read_batch(root / TEST_BATCH)
    xtr = np.concatenate([x for x, _ in train])
    ytr = np.concatenate([y for _, y in train])
    return Splits(
        "cifar10",
        ImageSet(torch.from_numpy(xtr), torch.from_numpy(ytr), 10),
        ImageSet(torch.from_numpy(xte), torch.from_numpy(yte), 10),
    )
