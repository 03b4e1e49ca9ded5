"""The trainer's task for DEQ-INR: fit a signal, PSNR decides "best", pictures of the fit.

Batches of the ``signal`` dataset are ``((coords, index), values)``; the model is called as
``model(coords, index)`` so that the amortisation cache sees each coordinate's index. Values
live in [−1, 1] (data range 2). Every step logs the f applications it spent (``f_evals``); each
evaluation adds SSIM on image grids, and the pictures show the reconstruction next to the
original and the absolute error (scaled to its maximum).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from deqkit.plot import side_by_side
from deqkit.train.task import Best, DEQTerms, StepLoss
from deqkit.train.tasks import SignalFit

from .fit import DATA_RANGE, evaluate

__all__ = ["INRFit"]


class INRFit(SignalFit):
    """MSE on [−1, 1] values, PSNR with data range 2 ("best", max), SSIM on images.

    >>> task = INRFit({"test_grid": [2, 2]})
    >>> m = task.metrics(); task.update(m, torch.zeros(4, 1), torch.full((4, 1), 0.2))
    >>> round(float(m["psnr"].compute()), 2)
    20.0
    >>> sorted(task.pictures(None, torch.zeros(4, 1), torch.zeros(4, 1)))
    ['reconstruction']
    """

    name = "deq_inr"
    best = Best("psnr", "max")

    def __init__(self, data_info: Mapping[str, Any], data_range: float = DATA_RANGE):
        super().__init__(data_info, data_range=data_range)

    def forward(self, model, inputs):
        coords, index = inputs
        return model(coords, index)

    def loss(self, output: Any, targets: Any, sol: Any, terms: DEQTerms) -> StepLoss:
        step = super().loss(output, targets, sol, terms)
        # One f per step is the point of amortisation: log what the step really spent.
        if sol is not None:
            step.terms["f_evals"] = torch.tensor(float(sol.nfev))
        return step

    def pictures(self, inputs, targets, output):
        grid = self.data_info.get("test_grid")
        pred = self.final(output).detach().float()
        if grid is None or len(grid) != 2 or pred.shape[0] != math.prod(grid):
            return {}

        def as_image(values: torch.Tensor) -> torch.Tensor:  # (N, C) in [-1, 1] -> (H, W, C)
            return ((values.T.reshape(values.shape[1], *grid).permute(1, 2, 0) + 1) / 2).cpu()

        error = (pred - targets.detach().float()).abs().mean(1, keepdim=True)
        error = error / error.max().clamp_min(1e-12)  # scaled to its maximum, to be visible
        return {
            "reconstruction": side_by_side(
                as_image(pred), as_image(targets), error.reshape(*grid).cpu()
            )
        }

    def model_metrics(self, model, dataset) -> dict[str, float]:
        signal, index = getattr(dataset, "signal", None), getattr(dataset, "index", None)
        if signal is None or len(signal.grid) != 2:
            return {}
        report = evaluate(model, signal, index)
        return {"ssim": report["ssim"]} if "ssim" in report else {}
