"""The trainer's task for the sequence datasets: its loss and metrics follow ``data_info['kind']``.

- regression (adding): mean squared error, ``mse`` decides "best" (min);
- classification (sequential digits / MNIST): cross entropy, accuracy ``acc`` (max);
- per_step (copy): cross entropy over every step, ``ce`` (min), and ``acc`` over the steps that
  recall the symbols.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from deqkit.train.task import Best, Task

__all__ = ["SequenceTask"]

_BEST = {
    "regression": Best("mse", "min"),
    "classification": Best("acc", "max"),
    "per_step": Best("ce", "min"),
}
_RECALL = 10  # the copy task's symbols sit in its last 10 steps


class SequenceTask(Task):
    """Regression, per-sequence or per-step classification, as the data says.

    >>> task = SequenceTask({"kind": "regression"})
    >>> task.best, round(task.criterion(torch.zeros(4), torch.ones(4)).item(), 3)
    (Best(metric='mse', mode='min'), 1.0)
    """

    name = "sequence"
    best = Best("mse", "min")

    def __init__(self, data_info: Mapping[str, Any]):
        super().__init__(data_info)
        kind = self.data_info.get("kind")
        if kind not in _BEST:
            raise ValueError(
                f"sequence task needs data_info['kind'] in {sorted(_BEST)}, got {kind!r}"
            )
        self.kind, self.best = kind, _BEST[kind]

    def criterion(self, output, targets):
        if self.kind == "regression":
            return F.mse_loss(output, targets)
        if self.kind == "per_step":
            return F.cross_entropy(output.flatten(0, 1), targets.flatten())
        return F.cross_entropy(output, targets)

    def metrics(self):
        from torchmetrics import MeanMetric, MeanSquaredError
        from torchmetrics.classification import MulticlassAccuracy

        if self.kind == "regression":
            return {"mse": MeanSquaredError()}
        classes = int(self.data_info["num_classes"])
        acc = MulticlassAccuracy(classes, average="micro")
        return {"acc": acc} if self.kind == "classification" else {"ce": MeanMetric(), "acc": acc}

    def update(self, metrics, output, targets):
        output = self.final(output)
        if self.kind != "per_step":
            super().update(metrics, output, targets)
            return
        metrics["ce"].update(self.criterion(output, targets).detach(), weight=targets.numel())
        recall = output[:, -_RECALL:].argmax(-1)
        metrics["acc"].update(recall.flatten(), targets[:, -_RECALL:].flatten())

    def step_metrics(self, output, targets):
        output = self.final(output)
        with torch.no_grad():
            if self.kind == "classification":
                return {"acc": (output.argmax(-1) == targets).float().mean().item()}
            return {self.best.metric: self.criterion(output, targets).item()}
