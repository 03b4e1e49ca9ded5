"""MDEQ: multiscale deep equilibrium models (Bai, Koltun, Kolter, NeurIPS 2020)."""

from __future__ import annotations

from .cell import MDEQCell
from .model import MDEQClassifier, MDEQConfig

__all__ = ["TASK", "MDEQCell", "MDEQClassifier", "MDEQConfig", "build"]

#: Trained as an image classifier (cross-entropy, accuracy).
TASK = "classification"

_DATA_KEYS = ("in_channels", "num_classes")


def build(model_cfg: dict, deq_options: dict, data_info: dict) -> MDEQClassifier:
    """Build an MDEQ classifier from a recipe's ``model`` and ``deq`` sections.

    Args:
        model_cfg: :class:`MDEQConfig` fields (a ``name`` key, if present, is ignored).
        deq_options: keyword arguments of ``dk.DEQ`` (solver, backward, tol, max_iter, ...).
        data_info: at least ``in_channels`` and ``num_classes`` (any image size works: each
            lower resolution is half the one above, rounded up).

    >>> deq = {"max_iter": 4, "on_failure": "ignore"}
    >>> info = {"in_channels": 1, "image_size": 8, "num_classes": 10}
    >>> model = build({"name": "mdeq", "channels": [8, 16]}, deq, info)
    >>> import torch
    >>> logits, solution = model(torch.randn(2, 1, 8, 8))
    >>> logits.shape, int(solution.nstep.max())
    (torch.Size([2, 10]), 4)
    """
    missing = [k for k in _DATA_KEYS if k not in data_info]
    if missing:
        raise ValueError(f"data_info lacks {missing}; got keys {sorted(data_info)}")
    options = {k: v for k, v in model_cfg.items() if k != "name"}
    config = MDEQConfig.from_dict(options)
    return MDEQClassifier(
        config,
        data_info["in_channels"],
        data_info["num_classes"],
        **deq_options,
    )
