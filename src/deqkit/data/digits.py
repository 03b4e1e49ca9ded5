"""The scikit-learn handwritten digits (1797 images, 8x8, 10 classes), bundled with sklearn."""

from __future__ import annotations

import torch

from .base import ImageSet, Splits

__all__ = ["load_digits"]

#: Test-set size of the fixed split (20% of 1797); the train set gets the other 1437 images.
TEST_SIZE = 360
_SPLIT_SEED = 0


def load_digits() -> Splits:
    """The digits as (N, 1, 8, 8) images in [0, 1], split 1437/360 by a fixed seeded permutation.

    The split never depends on the training seed, so every run is scored on the same test set.

    >>> d = load_digits()
    >>> len(d.train), len(d.test), d.train.shape, float(d.train.images.max())
    (1437, 360, (1, 8, 8), 1.0)
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    # sklearn stores intensities as counts 0..16 (4x4 blocks of a 32x32 bitmap).
    images = torch.as_tensor(bunch.images, dtype=torch.float32).div_(16.0).unsqueeze(1)
    labels = torch.as_tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(_SPLIT_SEED))
    test, train = order[:TEST_SIZE], order[TEST_SIZE:]
    return Splits(
        "digits",
        ImageSet(images[train], labels[train], 10),
        ImageSet(images[test], labels[test], 10),
    )
