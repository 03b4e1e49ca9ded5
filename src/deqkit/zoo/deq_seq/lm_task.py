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
from torch import nn

from deqkit.train.task import Best, Task
from deqkit.train.tasks import LanguageModel

__all__ = ["CopyMemoryTask", "SequenceLMTask"]


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


class CopyMemoryTask(Task):
    """The copy-memory task (DEQ paper §5) for :class:`SequenceLM`: per-position cross-entropy.

    Batches are the ``sequences`` dataset's copy task: one-hot inputs (B, T + 20, 10) and
    targets (B, T + 20) (blanks, then the 10 symbols to recall). The loss averages over all
    positions, so a memoryless model scores 10·ln 8 / (T + 20); ``recall`` is the accuracy on
    the last 10 positions. Each sequence is solved alone (no memory across batches).

    >>> from deqkit.zoo.deq_seq import SeqLMConfig, SequenceLM
    >>> lm = SequenceLM(SeqLMConfig(block="lstm", d_model=4, d_hidden=4), vocab_size=10)
    >>> task = CopyMemoryTask({"input_size": 10})
    >>> x = torch.nn.functional.one_hot(torch.randint(0, 10, (2, 25)), 10).float()
    >>> y = torch.zeros(2, 25, dtype=torch.long)
    >>> out, sol = task.forward(lm, task.split((x, y))[0])
    >>> out.shape, sorted(task.metrics())
    (torch.Size([2, 25, 10]), ['recall'])
    """

    name = "copy_memory"
    best = Best("recall", "max")

    def __init__(self, data_info):
        super().__init__(data_info)
        if "input_size" not in self.data_info:
            raise ValueError(f"copy_memory needs data_info['input_size'], got {data_info!r}")
        self.vocab_size = int(self.data_info["input_size"])

    def split(self, batch):
        """One-hot inputs → token ids; targets unchanged."""
        inputs, targets = batch
        return inputs.argmax(-1), targets

    def forward(self, model, inputs):
        """Log-probabilities (B, T + 20, V) and the solution."""
        features, _, sol = model(inputs)
        return model.log_probs(features), sol

    def criterion(self, output, targets):
        return nn.functional.nll_loss(output.flatten(0, 1).float(), targets.flatten())

    def metrics(self):
        from torchmetrics.classification import MulticlassAccuracy

        return {"recall": MulticlassAccuracy(self.vocab_size, average="micro")}

    def update(self, metrics, output, targets):
        last = self.final(output)[:, -10:]
        metrics["recall"].update(last.flatten(0, 1), targets[:, -10:].flatten())

    def count(self, inputs, targets):
        return int(targets.numel())
