"""The trainer's language-modelling task with segment recurrence for :class:`SequenceLM`.

Batches of the ``text`` dataset are ``(inputs, targets, starts)``. The task keeps the memory
of the last batch (one per train/eval mode) and hands it to the model when the new batch
continues it row by row (every start advanced by the segment length); otherwise the segment
starts without history. The model's output is its log-probabilities (B, T, V), so the shipped
:class:`~deqkit.train.tasks.LanguageModel` loss and metrics (ppl, bpc/bpw) apply unchanged,
adaptive softmax included.
"""

from __future__ import annotations

from typing import Any

import torch

from deqkit.train.tasks import LanguageModel

__all__ = ["SequenceLMTask"]


class SequenceLMTask(LanguageModel):
    """:class:`~deqkit.train.tasks.LanguageModel` that carries memories across segments.

    ``unit`` defaults to the dataset's ``level`` ("char" → bpc, "word" → bpw).

    >>> from deqkit.zoo.deq_seq import SeqLMConfig, SequenceLM
    >>> lm = SequenceLM(SeqLMConfig(block="lstm", d_model=4, d_hidden=4), vocab_size=5)
    >>> task = SequenceLMTask({"vocab_size": 5, "level": "char"})
    >>> x = torch.randint(0, 5, (2, 3))
    >>> out, sol = task.forward(lm, (x, torch.tensor([0, 10])))
    >>> out.shape, task.unit, task.forward(lm, (x, torch.tensor([3, 13])))[0].shape
    (torch.Size([2, 3, 5]), 'char', torch.Size([2, 3, 5]))
    """

    name = "sequence_lm"

    def __init__(self, data_info, unit: str | None = None):
        super().__init__(data_info, unit or data_info.get("level", "token"))
        self._memory: dict[bool, tuple[torch.Tensor, Any]] = {}

    def split(self, batch):
        """``(tokens, next_tokens, starts)`` → inputs ``(tokens, starts)``, targets."""
        x, y, starts = batch
        return (x, starts), y

    def forward(self, model, inputs):
        """Log-probabilities (B, T, V) and the solution; memory reused when contiguous."""
        x, starts = inputs
        last = self._memory.get(model.training)
        memory = None
        if last is not None and torch.equal(last[0] + x.shape[1], starts):
            memory = last[1]
        features, memory, sol = model(x, memory)
        self._memory[model.training] = (starts.detach().clone(), memory)
        return model.log_probs(features), sol
