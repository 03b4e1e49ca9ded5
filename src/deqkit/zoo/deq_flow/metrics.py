"""Optical-flow metrics over the valid pixels of a whole split, as torchmetrics objects (their
sums reduce over DDP ranks): end-point error, k-px outlier rates and KITTI's F1-all.

Every metric averages over all valid pixels of the split (Sintel's convention; KITTI's
published EPE averages per image first).

>>> import torch
>>> pred, gt = torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2)
>>> pred[0, 0, 0, 0] = 4.0  # one pixel off by 4 px
>>> valid = torch.ones(1, 2, 2, dtype=torch.bool)
>>> m = flow_metrics()
>>> for metric in m.values():
...     metric.update(pred, (gt, valid))
>>> {k: round(float(v.compute()), 3) for k, v in m.items()}
{'epe': 1.0, 'out1': 25.0, 'out3': 25.0, 'out5': 0.0, 'f1_all': 25.0}
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

__all__ = ["KINDS", "FlowMetric", "end_point_error", "flow_metrics"]

#: Metric name -> what it counts per valid pixel (outliers and F1 in percent).
KINDS = ("epe", "out1", "out3", "out5", "f1_all")


def end_point_error(pred: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """‖pred − flow‖ per pixel: (B, 2, H, W) -> (B, H, W).

    >>> end_point_error(torch.tensor([[[[3.0]], [[4.0]]]]), torch.zeros(1, 2, 1, 1)).item()
    5.0
    """
    return (pred - flow).square().sum(1).sqrt()


class FlowMetric(Metric):
    """One flow metric (a name of :data:`KINDS`); ``update(pred, (flow, valid))``."""

    full_state_update = False

    def __init__(self, kind: str, **kwargs):
        super().__init__(**kwargs)
        if kind not in KINDS:
            raise ValueError(f"unknown flow metric {kind!r}; choose one of {KINDS}")
        self.kind = kind
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: tuple[torch.Tensor, torch.Tensor]) -> None:
        flow, valid = target
        err = end_point_error(pred.detach().double(), flow.double())[valid]
        if self.kind == "epe":
            value = err.sum()
        elif self.kind == "f1_all":
            magnitude = flow.double().square().sum(1).sqrt()[valid]
            value = 100.0 * ((err > 3.0) & (err > 0.05 * magnitude)).sum()
        else:
            value = 100.0 * (err > float(self.kind[3:])).sum()
        self.total += value
        self.count += valid.sum()

    def compute(self) -> torch.Tensor:
        return self.total / self.count.clamp(min=1)


def flow_metrics() -> dict[str, FlowMetric]:
    """A fresh set of all :data:`KINDS`."""
    return {kind: FlowMetric(kind) for kind in KINDS}
