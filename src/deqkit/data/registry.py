"""The dataset side of a run: what a loader returns, and how a recipe names a dataset.

A dataset is registered by one line in :data:`deqkit.data.DATASETS`: its name -> the
``"module:attribute"`` of a :class:`DataSource`. A source couples

- ``options``: a dataclass of the dataset's own recipe keys (``data.pad``, ``data.seq_len``,
  ...), next to the keys every dataset has (``name``, ``batch_size``, ``eval_batch_size``,
  ``root``, ``val_fraction``; see ``train.config.DataConfig``). Unknown keys are rejected with
  the valid ones.
- ``load(options, context) -> DataSplits``: the sets, the ``info`` the model builder and the
  task receive, and a ``state`` of plain values (fitted normalisation, a vocabulary) that a
  checkpoint stores and hands back as ``context.state`` on resume and evaluation.

A set (train, val, test) is any object with ``__len__`` and ``batch(index, generator=None)``:
``index`` is a 1-D tensor of sample indices, ``generator`` is set for training batches (use it for
random augmentation, so a resumed run draws the same). What ``batch`` returns is the task's
business (``Task.split`` takes it apart): a tuple, a dict, a graph batch. A set may also define
``train_indices(batch_size, step, seed, rank, world)`` to choose its own training batches (a
contiguous text stream); the default is :func:`deqkit.data.train_batch_indices`.

>>> import torch
>>> class Squares:
...     def __init__(self, n): self.x = torch.arange(n, dtype=torch.float32)
...     def __len__(self): return len(self.x)
...     def batch(self, index, generator=None): return self.x[index], self.x[index] ** 2
>>> data = DataSplits(train=Squares(8), test=Squares(4), info={"features": 1})
>>> data.train.batch(torch.tensor([3]))
(tensor([3.]), tensor([9.]))
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["DataContext", "DataSource", "DataSplits", "NoOptions", "get_source", "split_validation"]


@dataclass(frozen=True)
class DataSplits:
    """What a loader returns.

    Args:
        train: the training set.
        test: the test set (scored at the end of a run and by ``deqkit eval``).
        info: plain values describing the data (``num_classes``, ``in_channels``, ``vocab_size``
            ...), passed to the model builder and the task; stored in the checkpoint.
        val: a validation set (periodic evaluation uses it when present), or None.
        state: plain values to restore the same preprocessing later (``context.state``).
    """

    train: Any
    test: Any
    info: dict
    val: Any = None
    state: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DataContext:
    """What the trainer hands a loader besides its options.

    Args:
        root: the recipe's ``data.root`` (a local folder), or None.
        seed: the run's seed (for a validation split carved from the training set).
        val_fraction: share of the training set to hold out for validation (0: none). A loader
            without a validation split raises ``ValueError`` for a value > 0.
        state: ``DataSplits.state`` of the run being resumed or evaluated, or None when fitting.
    """

    root: Path | None = None
    seed: int = 0
    val_fraction: float = 0.0
    state: dict | None = None


@dataclass(frozen=True)
class NoOptions:
    """Options of a dataset that has no recipe keys of its own."""


@dataclass(frozen=True)
class DataSource:
    """A named dataset: its typed recipe options and its loader.

    Args:
        load: ``load(options, context) -> DataSplits``.
        options: the dataclass of the dataset's own recipe keys.
        needs_root: the data comes from a local folder (``data.root``); ``deqkit recipes``
            marks recipes using it.
        description: one line for listings.
    """

    load: Callable[[Any, DataContext], DataSplits]
    options: type = NoOptions
    needs_root: bool = False
    description: str = ""


def split_validation(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(val, train)`` holding out ``fraction`` of ``n`` samples, seeded by ``seed``.

    >>> val, train = split_validation(10, 0.2, seed=0)
    >>> len(val), len(train), sorted(val.tolist() + train.tolist()) == list(range(10))
    (2, 8, True)
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(fraction * n))
    return order[:n_val], order[n_val:]


def get_source(name: str, table: dict[str, str]) -> DataSource:
    """The :class:`DataSource` registered as ``name`` in ``table`` (imported on first use)."""
    if name not in table:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(table)}")
    module_name, _, attr = table[name].partition(":")
    try:
        source = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"dataset {name!r}: cannot import {table[name]} ({exc})") from None
    if not isinstance(source, DataSource):
        raise TypeError(f"dataset {name!r}: {table[name]} is not a DataSource")
    return source
