"""Sequence DEQs: the DEQ-Transformer and DEQ-TrellisNet language models (Bai, Kolter, Koltun,
NeurIPS 2019), with the reusable history-padding interface, explicit baselines and LM task.

One package holds both models because they share everything around the cell: the
:class:`SequenceCell` interface and :class:`SequenceDEQ` (history padding, injection once per
forward, memories), the language model and its head, the baselines and the task.
"""

from __future__ import annotations

from .baselines import LSTMBody, UntiedStack
from .model import SeqLMConfig, SequenceLM
from .seq import Memory, SequenceCell, SequenceDEQ
from .transformer import DEQTransformerCell
from .trellisnet import TrellisNetCell

#: The trainer task of every recipe of this package.
TASK = "deqkit.zoo.deq_seq.lm_task:SequenceLMTask"

__all__ = [
    "TASK",
    "DEQTransformerCell",
    "LSTMBody",
    "Memory",
    "SeqLMConfig",
    "SequenceCell",
    "SequenceDEQ",
    "SequenceLM",
    "TrellisNetCell",
    "UntiedStack",
    "build",
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
