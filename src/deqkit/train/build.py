"""Turn a :class:`Config` into the objects of a run: data, model, optimiser and schedule."""

from __future__ import annotations

import functools
import importlib
import math
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._compat import set_scheduler_last_lr
from ..data import DataContext, DataSplits
from .config import Config, OptimConfig, deq_kwargs
from .errors import ConfigError, DataError
from .task import Task, get_task

__all__ = [
    "build_model",
    "build_task",
    "build_optimizer",
    "build_scheduler",
    "lr_factor",
    "prepare_data",
    "resume_scheduler",
    "seed_everything",
]


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and ``random`` (the run's full RNG state follows from ``seed``)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def prepare_data(cfg: Config, state: dict | None = None) -> DataSplits:
    """Load the recipe's dataset through its registered :class:`DataSource`; ``state`` is a
    checkpoint's ``data_state`` (restores the fitted preprocessing instead of fitting it).

    Loader failures (missing folder, malformed file) become a one-line :class:`DataError`.

    >>> from deqkit.train.recipe import parse
    >>> prepare_data(parse({"model": {"name": "mdeq"}, "data": {"pad": 4}})).info
    {'in_channels': 1, 'image_size': 16, 'num_classes': 10}
    """
    from ..data import data_source

    root = Path(cfg.data.root).expanduser() if cfg.data.root is not None else None
    if root is not None and root.exists() and not root.is_dir():
        raise DataError(f"data.root {root} is a file, not a folder")
    context = DataContext(root, cfg.train.seed, cfg.data.val_fraction, state)
    try:
        return data_source(cfg.data.name).load(cfg.data_options, context)
    except (ValueError, TypeError, OSError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"data {cfg.data.name!r}: {exc}") from exc


def build_task(cfg: Config, data_info: dict) -> Task:
    """The recipe's task (``task.name`` or the model's ``TASK``) with its options.

    >>> from deqkit.train.recipe import parse
    >>> build_task(parse({"model": {"name": "mdeq"}}), {"num_classes": 10}).best
    Best(metric='acc', mode='max')
    """
    cls = get_task(cfg.task_name)
    try:
        return cls(data_info, **cfg.task_options())
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"task {cls.name!r}: {exc}") from None


def build_model(cfg: Config, data_info: dict) -> nn.Module:
    """Build ``cfg.model`` from the zoo, or from ``"package.module:function"`` for one's own
    model (same signature as a zoo ``build``: ``(model_cfg, deq_options, data_info)``, where
    ``deq_options`` are ready ``dk.DEQ`` keyword arguments built here from the recipe's ``deq``
    section, so model code needs nothing from the trainer). A builder's ValueError/TypeError is
    a model-option error of the recipe (:class:`ConfigError`)."""
    name = cfg.model["name"]
    deq_options = deq_kwargs(cfg.deq)
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            builder = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"model.name {name!r}: cannot import builder ({exc})") from None
    else:
        from ..zoo import MODELS

        if name not in MODELS:
            raise ConfigError(f"unknown model.name {name!r}; choose one of {sorted(MODELS)}")
        builder = importlib.import_module(MODELS[name]).build
    try:
        return builder(cfg.model_kwargs(), deq_options, dict(data_info))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model {name!r}: {exc}") from exc


def build_optimizer(cfg: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the base learning rate before optimiser step ``step`` (0-based).

    >>> [round(lr_factor(s, 10, 2, "cosine"), 3) for s in (0, 1, 2, 6, 9)]
    [0.5, 1.0, 1.0, 0.5, 0.038]
    """
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(cfg: OptimConfig, optimizer, total_steps: int):
    """Linear warmup then cosine decay to 0 (or constant), stepped once per optimiser step."""
    # A partial keeps its arguments out of __dict__, so the scheduler's state_dict holds only
    # plain numbers (weights_only-safe) and a resumed run with more steps gets the new schedule.
    factor = functools.partial(
        lr_factor, total=total_steps, warmup=cfg.warmup_steps, kind=cfg.scheduler
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def resume_scheduler(scheduler, state: dict) -> None:
    """Load a scheduler's state, then set the learning rate that the *current* schedule gives
    at the restored step (equal to the saved one unless the run's length changed)."""
    scheduler.load_state_dict(state)
    optimizer = scheduler.optimizer
    for group, base, factor in zip(
        optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
    ):
        group["lr"] = base * factor(scheduler.last_epoch)
    set_scheduler_last_lr(scheduler, [group["lr"] for group in optimizer.param_groups])
