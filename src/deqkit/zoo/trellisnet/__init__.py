"""The DEQ-TrellisNet language model (Bai, Kolter, Koltun, NeurIPS 2019), model ``trellisnet``.

The cell is :class:`TrellisNetCell` (``cell.py``); the history padding, language model, tasks
and baselines are the shared sequence-DEQ base :mod:`deqkit.zoo.deq_seq`.
"""

from __future__ import annotations

from deqkit.zoo.deq_seq import TASK, SequenceLM, build_block

from .cell import TrellisNetCell

__all__ = ["TASK", "TrellisNetCell", "build"]


def build(model_cfg: dict, deq_options: dict, data_info: dict) -> SequenceLM:
    """Build a DEQ-TrellisNet LM (``mode``: deq, unrolled or untied) from a recipe's sections.

    >>> lm = build({"name": "trellisnet", "d_model": 8, "d_hidden": 8},
    ...            {"max_iter": 5}, {"vocab_size": 20})
    >>> type(lm.body.cell).__name__
    'TrellisNetCell'
    """
    return build_block("trellisnet", model_cfg, deq_options, data_info)
