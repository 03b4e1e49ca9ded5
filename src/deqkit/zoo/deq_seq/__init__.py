"""The sequence-DEQ base (Bai, Kolter, Koltun, NeurIPS 2019): history padding, LM, tasks, baselines.

Everything around the cell that a sequence DEQ needs: the :class:`SequenceCell` interface and
:class:`SequenceDEQ` (history padding, injection once per forward, memories), the language model
and its head, the LSTM / untied-stack baselines, the LM and copy-memory tasks, ``generate`` and
``compare``. The cells are in :mod:`deqkit.zoo.deq_transformer` and :mod:`deqkit.zoo.trellisnet`
(model names ``deq_transformer`` and ``trellisnet``); ``name: deq_seq`` with ``block:
transformer | trellisnet | lstm`` builds the same models (older checkpoints, the LSTM recipes).
"""

from __future__ import annotations

from .baselines import LSTMBody, UntiedStack
from .model import SeqLMConfig, SequenceLM
from .seq import Memory, SequenceCell, SequenceDEQ

#: The trainer task of every recipe of this package.
TASK = "deqkit.zoo.deq_seq.lm_task:SequenceLMTask"

__all__ = [
    "TASK",
    "LSTMBody",
    "Memory",
    "SeqLMConfig",
    "SequenceCell",
    "SequenceDEQ",
    "SequenceLM",
    "UntiedStack",
    "build",
    "build_block",
]


def build(model_cfg: dict, deq_options: dict, data_info: dict) -> SequenceLM:
    """Build a sequence LM from a recipe's ``model`` and ``deq`` sections.

    ``data_info`` needs ``vocab_size`` (or ``input_size``, the copy task's token count).

    >>> lm = build({"name": "deq_seq", "d_model": 8, "n_head": 2, "d_inner": 16},
    ...            {"max_iter": 5}, {"vocab_size": 20})
    >>> type(lm.body).__name__
    'SequenceDEQ'
    """
    # Text corpora give vocab_size; the copy task's one-hot width is its vocabulary.
    vocab = data_info.get("vocab_size", data_info.get("input_size"))
    if vocab is None:
        raise ValueError(f"data_info lacks 'vocab_size'; got keys {sorted(data_info)}")
    options = {k: v for k, v in model_cfg.items() if k != "name"}
    return SequenceLM(SeqLMConfig.from_dict(options), int(vocab), **deq_options)


def build_block(block: str, model_cfg: dict, deq_options: dict, data_info: dict) -> SequenceLM:
    """:func:`build` for a zoo model that is one block (``deq_transformer``, ``trellisnet``).

    A different ``block`` in ``model_cfg`` is a user mistake.

    >>> build_block("trellisnet", {"name": "trellisnet", "block": "lstm"}, {}, {"vocab_size": 5})
    Traceback (most recent call last):
    ...
    ValueError: model 'trellisnet' has block 'trellisnet', got 'lstm' (other blocks: name deq_seq)
    """
    given = model_cfg.get("block", block)
    if given != block:
        raise ValueError(
            f"model {model_cfg.get('name')!r} has block {block!r}, got {given!r} "
            "(other blocks: name deq_seq)"
        )
    return build({**model_cfg, "block": block}, deq_options, data_info)
