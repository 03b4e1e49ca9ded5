"""DEQ-INR: implicit neural representations as multiplicative filter networks run to equilibrium,
with amortised training ((Implicit)², Huang, Bai, Kolter, NeurIPS 2021)."""

from __future__ import annotations

from .cell import MFNCell
from .filters import FILTERS, FilterBank, FourierFilter, GaborFilter
from .model import DEQINR, ExplicitMFN, INRConfig, count_parameters

__all__ = [
    "DEQINR",
    "FILTERS",
    "ExplicitMFN",
    "FilterBank",
    "FourierFilter",
    "GaborFilter",
    "INRConfig",
    "MFNCell",
    "TASK",
    "build",
    "count_parameters",
]

#: The trainer's task (``deqkit.zoo.deq_inr.task:INRFit``), named as a path so that importing
#: the model does not import the trainer.
TASK = "deqkit.zoo.deq_inr.task:INRFit"

_DATA_KEYS = ("in_features", "out_features", "num_points")


def build(model_cfg: dict, deq_options: dict, data_info: dict) -> DEQINR | ExplicitMFN:
    """Build a DEQ-MFN (or, with ``explicit: true``, the explicit MFN) from a recipe.

    Args:
        model_cfg: :class:`INRConfig` fields (a ``name`` key, if present, is ignored).
        deq_options: keyword arguments of ``dk.DEQ`` (unused by the explicit MFN).
        data_info: ``in_features`` (coordinate dimension), ``out_features`` (value channels)
            and ``num_points`` (training coordinates, the size of the amortisation cache).

    >>> info = {"in_features": 2, "out_features": 3, "num_points": 16}
    >>> type(build({"name": "deq_inr", "width": 8}, {"max_iter": 5}, info)).__name__
    'DEQINR'
    >>> type(build({"width": 8, "explicit": True}, {}, info)).__name__
    'ExplicitMFN'
    """
    missing = [k for k in _DATA_KEYS if k not in data_info]
    if missing:
        raise ValueError(f"data_info lacks {missing}; got keys {sorted(data_info)}")
    config = INRConfig.from_dict({k: v for k, v in model_cfg.items() if k != "name"})
    if config.explicit:
        return ExplicitMFN(config, data_info["in_features"], data_info["out_features"])
    return DEQINR(
        config,
        data_info["in_features"],
        data_info["out_features"],
        data_info["num_points"],
        **deq_options,
    )
