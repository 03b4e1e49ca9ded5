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
        residual_weight: weight of the flow-residual penalty, the mean |Δ| of f at the
            returned state in pixels (:meth:`DEQFlow.flow_residual`), added in training and
            logged as ``flow_residual`` (0: off, the recipes' setting).
    """

    name = "optical_flow"
    best = Best("epe", "min")

    def __init__(self, data_info: Mapping[str, Any], max_flow: float = 400.0,
                 residual_weight: float = 0.0):  # fmt: skip
        super().__init__(data_info)
        for key, value in (("max_flow", max_flow), ("residual_weight", residual_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{key} must be a non-negative number, got {value!r}")
        if max_flow == 0:
            raise ValueError("max_flow must be a positive number, got 0")
        self.max_flow, self.residual_weight = float(max_flow), float(residual_weight)

    def split(self, batch):
        return (batch["image1"], batch["image2"]), (batch["flow"], batch["valid"])

    def forward(self, model, inputs):
        if self.residual_weight and model.training and torch.is_grad_enabled():
            return model(*inputs, flow_residual=True)
        return model(*inputs)

    def loss(self, output, targets, sol, terms):
        loss = super().loss(output, targets, sol, terms)
        residual = None if sol is None else sol.aux
        if self.residual_weight and isinstance(residual, torch.Tensor):
            loss.terms["flow_residual"] = residual
            loss.total = loss.total + self.residual_weight * residual
        return loss

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
