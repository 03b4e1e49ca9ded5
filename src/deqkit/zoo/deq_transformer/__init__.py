"""The DEQ-Transformer LM (Bai, Kolter, Koltun, NeurIPS 2019), zoo model ``deq_transformer``.

The cell is :class:`DEQTransformerCell` (``cell.py``); the history padding, language model,
tasks and baselines are the shared sequence-DEQ base :mod:`deqkit.zoo.deq_seq`.
"""

from __future__ import annotations

from deqkit.zoo.deq_seq import TASK, SequenceLM, build_block

from .cell import DEQTransformerCell

__all__ = ["TASK", "DEQTransformerCell", "build"]


def build(model_cfg: dict, deq_options: dict, data_info: dict) -> SequenceLM:
    """Build a DEQ-Transformer LM (``mode``: deq, unrolled or untied) from a recipe's sections.

    >>> lm = build({"name": "deq_transformer", "d_model": 8, "n_head": 2, "d_inner": 16},
    ...            {"max_iter": 5}, {"vocab_size": 20})
    >>> type(lm.body).__name__, lm.config.block
    ('SequenceDEQ', 'transformer')
    """
    return build_block("transformer", model_cfg, deq_options, data_info)
