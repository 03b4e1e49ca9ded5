"""A linear DEQ with a chosen spectral radius, its data and a regression task, for the diagnose
tests (``tests/train/test_diagnose.py`` and ``tests/diagnose/``)."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import MeanSquaredError

import deqkit as dk
from deqkit.train.task import Best, Task


class Vectors:
    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def batch(self, index, generator=None):
        return self.x[index], self.x[index].sum(1, keepdim=True)


def vectors(n=24) -> Vectors:
    """``n`` fixed random 6-vectors (float64), target: their sum."""
    return Vectors(torch.randn(n, 6, generator=torch.Generator().manual_seed(1)).double())


class Fit(Task):
    name = "fit"
    best = Best("mse", "min")

    def criterion(self, output, targets):
        return nn.functional.mse_loss(output, targets)

    def metrics(self):
        return {"mse": MeanSquaredError()}


class Linear(nn.Module):
    """z = W z + x: one equilibrium per sample, J_f = W everywhere."""

    def __init__(self, weight, solver="anderson", backward="implicit", max_iter=60):
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.deq = dk.DEQ(
            lambda z, x: z @ self.weight.T + x,
            solver=solver,
            backward=backward,
            tol=1e-6,
            max_iter=max_iter,
            on_failure="ignore",
        )
        self.head = nn.Linear(len(weight), 1).double()

    def forward(self, x):
        z, sol = self.deq(x)
        return self.head(z), sol


def weight(rho: float) -> torch.Tensor:
    """A non-symmetric 6×6 matrix with spectral radius ``rho`` and a clear dominant eigenvalue
    (power iteration converges fast)."""
    g = torch.Generator().manual_seed(0)
    v = torch.eye(6, dtype=torch.float64) + 0.3 * torch.randn(6, 6, generator=g).double()
    eig = rho * torch.tensor([1.0, -0.6, 0.5, 0.4, -0.3, 0.1], dtype=torch.float64)
    return v @ torch.diag(eig) @ torch.linalg.inv(v)
