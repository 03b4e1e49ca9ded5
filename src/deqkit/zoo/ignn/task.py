"""Node classification on a transductive split: cross-entropy and accuracy over masked nodes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from deqkit.train.task import Best, Task

__all__ = ["NodeClassification"]


class NodeClassification(Task):
    """Single-label node classification: targets ``(labels, mask)``, only masked nodes count.

    The model returns logits (B, n, C) for B graphs of n (padded) nodes; labels are (B, n) and
    the boolean mask (B, n) selects the scored nodes (the split's nodes, never padding).
    ``data_info`` needs ``num_classes``.

    >>> task = NodeClassification({"num_classes": 2})
    >>> logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [5.0, 0.0]]])
    >>> targets = (torch.tensor([[0, 0, 1]]), torch.tensor([[True, True, False]]))
    >>> task.step_metrics(logits, targets), task.count(None, targets)
    ({'acc': 0.5}, 2)
    """

    name = "node_classification"
    best = Best("acc", "max")

    def __init__(self, data_info: Mapping[str, Any]):
        super().__init__(data_info)
        if "num_classes" not in self.data_info:
            raise ValueError(
                f"node_classification needs data_info['num_classes'], got {data_info!r}"
            )
        self.num_classes = int(self.data_info["num_classes"])

    @staticmethod
    def _select(output: torch.Tensor, targets: Any) -> tuple[torch.Tensor, torch.Tensor]:
        y, mask = targets
        return output[mask], y[mask]

    def criterion(self, output, targets):
        logits, y = self._select(output, targets)
        return nn.functional.cross_entropy(logits, y)

    def metrics(self):
        from torchmetrics.classification import MulticlassAccuracy

        return {"acc": MulticlassAccuracy(self.num_classes, average="micro")}

    def update(self, metrics, output, targets):
        logits, y = self._select(self.final(output), targets)
        metrics["acc"].update(logits, y)

    def step_metrics(self, output, targets):
        logits, y = self._select(self.final(output), targets)
        return {"acc": (logits.argmax(-1) == y).float().mean().item()}

    def count(self, inputs, targets):
        return int(targets[1].sum())
