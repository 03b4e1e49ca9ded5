"""Turn a :class:`Config` into the objects of a run: data, model, optimiser and schedule."""

from __future__ import annotations

import functools
import importlib
import math
import random
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ..data import FLIPPABLE, ImageSet, Preprocess, load_dataset
from .config import Config, DataConfig, OptimConfig, deq_kwargs

__all__ = [
    "RunData",
    "build_model",
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


@dataclass(frozen=True)
class RunData:
    """The sets a run trains and evaluates on, their preprocessing and the model's data_info.

    ``val`` is carved from the training set when ``data.val_fraction`` > 0; periodic evaluation
    then uses it and the test set is scored once at the end.
    """

    train: ImageSet
    val: ImageSet | None
    test: ImageSet
    preprocess: Preprocess
    info: dict


def prepare_data(cfg: DataConfig, seed: int, preprocess: dict | None = None) -> RunData:
    """Load ``cfg.name`` and fit (or restore, from a checkpoint's dict) the preprocessing.

    >>> d = prepare_data(DataConfig(name="digits", pad=4), seed=0)
    >>> d.info
    {'in_channels': 1, 'image_size': 16, 'num_classes': 10}
    """
    splits = load_dataset(cfg.name, cfg.root)
    train, val = splits.train, None
    if cfg.val_fraction > 0:
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        n_val = max(1, round(cfg.val_fraction * len(train)))
        val, train = train.subset(order[:n_val]), train.subset(order[n_val:])
    if preprocess is None:
        prep = Preprocess.fit(
            train,
            resize=cfg.resize,
            pad=cfg.pad,
            shift=cfg.shift if cfg.augment else 0,
            flip=cfg.augment and cfg.name in FLIPPABLE,
        )
    else:
        prep = Preprocess(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in preprocess.items()}
        )
    channels, height, width = train.shape
    if height != width:
        raise ValueError(f"{cfg.name} images are {height}x{width}; models expect square images")
    info = {
        "in_channels": channels,
        "image_size": prep.output_size(height),
        "num_classes": train.num_classes,
    }
    return RunData(train, val, splits.test, prep, info)


def preprocess_state(prep: Preprocess) -> dict:
    """The preprocessing as plain values, for a checkpoint."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(prep).items()}


def build_model(cfg: Config, data_info: dict) -> nn.Module:
    """Build ``cfg.model`` from the zoo, or from ``"package.module:function"`` for one's own
    model (same signature as a zoo ``build``: ``(model_cfg, deq_options, data_info)``, where
    ``deq_options`` are ready ``dk.DEQ`` keyword arguments built here from the recipe's ``deq``
    section, so model code needs nothing from the trainer)."""
    name = cfg.model["name"]
    deq_options = deq_kwargs(cfg.deq)
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            builder = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"model.name {name!r}: cannot import builder ({exc})") from None
        return builder(cfg.model_kwargs(), deq_options, dict(data_info))
    from ..zoo import build_model as zoo_build

    return zoo_build(name, cfg.model_kwargs(), deq_options, dict(data_info))


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
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
