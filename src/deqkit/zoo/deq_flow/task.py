"""The optical-flow task: pairs in, flow out, RAFT's masked L1 loss (a γ-weighted sequence
loss over the sampled states or unrolled steps), EPE ("best", lowest), outlier rates, F1-all.

>>> import torch
>>> task = OpticalFlow({"in_channels": 3}, max_flow=400.0)
>>> flow = torch.zeros(1, 2, 4, 4); valid = torch.ones(1, 4, 4, dtype=torch.bool)
>>> round(task.criterion(torch.ones(1, 2, 4, 4), (flow, valid)).item(), 3)
1.0
>>> round(task.step_metrics(torch.ones(1, 2, 4, 4), (flow, valid))["epe"], 4)
1.4142
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from deqkit.train.task import Best, Task

from .metrics import end_point_error, flow_metrics
from .viz import flow_picture

__all__ = ["OpticalFlow"]


class OpticalFlow(Task):
    """Batches are dicts ``image1``, ``image2``, ``flow``, ``valid`` (``deqkit.data.flow``).

    Args:
        data_info: the dataset's info.
        max_flow: pixels whose ground-truth flow is this long or longer are left out of the
            loss (RAFT's cut, 400 px).
    """

    name = "optical_flow"
    best = Best("epe", "min")

    def __init__(self, data_info: Mapping[str, Any], max_flow: float = 400.0):
        super().__init__(data_info)
        if isinstance(max_flow, bool) or not isinstance(max_flow, (int, float)) or max_flow <= 0:
            raise ValueError(f"max_flow must be a positive number, got {max_flow!r}")
        self.max_flow = float(max_flow)

    def split(self, batch):
        return (batch["image1"], batch["image2"]), (batch["flow"], batch["valid"])

    def forward(self, model, inputs):
        return model(*inputs)

    def criterion(self, output, targets):
        flow, valid = targets
        keep = valid & (flow.square().sum(1) < self.max_flow**2)
        l1 = (output - flow).abs().sum(1)
        return torch.where(keep, l1, 0.0).sum() / (2 * keep.sum()).clamp(min=1)

    def metrics(self):
        return flow_metrics()

    def step_metrics(self, output, targets):
        flow, valid = targets
        err = end_point_error(self.final(output).detach(), flow)[valid]
        return {"epe": err.mean().item() if err.numel() else 0.0}

    def pictures(self, inputs, targets, output):
        (image1, _), (flow, valid) = inputs, targets
        pred = self.final(output)
        return {"flow": flow_picture(image1[0], pred[0], flow[0], valid[0])}
