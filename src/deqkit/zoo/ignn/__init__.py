"""IGNN: implicit graph neural networks (Gu, Chang, Zhu, Sojoudi, El Ghaoui, NeurIPS 2020)."""

from __future__ import annotations

from .cell import IGNNCell, IGNNLayer, propagate
from .model import IGNN, IGNNConfig, worst_solution
from .wellposed import perron_root, project_rows_l1

__all__ = [
    "IGNN",
    "TASK",
    "IGNNCell",
    "IGNNConfig",
    "IGNNLayer",
    "build",
    "perron_root",
    "project_rows_l1",
    "propagate",
    "worst_solution",
]

#: Node classification on a transductive split; recipes for multi-label or graph tasks name
#: "multilabel" or "classification" instead. A path, so importing the zoo needs no trainer.
TASK = "deqkit.zoo.ignn.task:NodeClassification"

_DATA_KEYS = ("num_features", "num_classes")


def build(model_cfg: dict, deq_options: dict, data_info: dict) -> IGNN:
    """Build an IGNN from a recipe's ``model`` and ``deq`` sections and the data's ``info``.

    >>> model = build({"name": "ignn", "hidden": [8]}, {"max_iter": 50},
    ...               {"num_features": 3, "num_classes": 2})
    >>> [layer.cell.weight.shape[0] for layer in model.layers]
    [8]
    """
    missing = [k for k in _DATA_KEYS if k not in data_info]
    if missing:
        raise ValueError(f"data_info lacks {missing}; got keys {sorted(data_info)}")
    config = IGNNConfig.from_dict({k: v for k, v in model_cfg.items() if k != "name"})
    return IGNN(config, data_info["num_features"], data_info["num_classes"], **deq_options)
