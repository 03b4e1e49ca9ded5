"""The scikit-learn handwritten digits (1797 images, 8x8, 10 classes), bundled with sklearn."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from .base import ImageSet, Splits

__all__ = ["load_digits"]

#: Test-set size of the fixed split (20% of 1797); the train set gets the other 1437 images.
TEST_SIZE = 360
_SPLIT_SEED = 0


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    # Reading sklearn's bundled CSV directly skips importing sklearn (seconds on a busy machine);
    # if a future sklearn moves the file, its public loader gives the same array.
    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            data = np.loadtxt(path, delimiter=",", dtype=np.float64)
            return data[:, :-1], data[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    return bunch.data, bunch.target


def load_digits() -> Splits:
    """The digits as (N, 1, 8, 8) images in [0, 1], split 1437/360 by a fixed seeded permutation.

    The split never depends on the training seed, so every run is scored on the same test set.

    >>> d = load_digits()
    >>> len(d.train), len(d.test), d.train.shape, float(d.train.images.max())
    (1437, 360, (1, 8, 8), 1.0)
    """
    pixels, target = _read_digits()
    # sklearn stores intensities as counts 0..16 (4x4 blocks of a 32x32 bitmap).
    images = torch.as_tensor(pixels, dtype=torch.float32).div_(16.0).view(-1, 1, 8, 8)
    labels = torch.as_tensor(target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(_SPLIT_SEED))
    test, train = order[:TEST_SIZE], order[TEST_SIZE:]
    return Splits(
        "digits",
        ImageSet(images[train], labels[train], 10),
        ImageSet(images[test], labels[test], 10),
    )
