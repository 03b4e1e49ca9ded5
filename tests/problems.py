"""Problems with known answers shared by the tests: linear maps with closed-form fixed points,
contractive tanh cells."""

from __future__ import annotations

from dataclasses import dataclass

import torch

SOLVER_NAMES = ("fixed_point", "anderson", "broyden", "newton_krylov")


@dataclass
class LinearProblem:
    """z = A z + B x with ‖A‖₂ < 1, so z* = (I − A)⁻¹ B x."""

    A: torch.Tensor
    B: torch.Tensor
    x: torch.Tensor

    def f(self, z):
        return z @ self.A.T + self.x @ self.B.T

    def z_star(self):
        eye = torch.eye(self.A.shape[0], dtype=self.A.dtype)
        return torch.linalg.solve(eye - self.A, (self.x @ self.B.T).T).T


def make_linear(dim=6, in_dim=3, batch=4, radius=0.7, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(dim, dim, generator=gen, dtype=dtype)
    A = radius * A / torch.linalg.matrix_norm(A, 2)
    B = torch.randn(dim, in_dim, generator=gen, dtype=dtype)
    x = torch.randn(batch, in_dim, generator=gen, dtype=dtype)
    return LinearProblem(A, B, x)


class TanhCell(torch.nn.Module):
    """f(z, x) = tanh(W z + U x + b), contractive for small ‖W‖."""

    def __init__(self, dim=5, in_dim=3, scale=0.5, dtype=torch.float64, seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        w = torch.randn(dim, dim, generator=gen, dtype=dtype)
        self.W = torch.nn.Parameter(scale * w / torch.linalg.matrix_norm(w, 2))
        self.U = torch.nn.Parameter(torch.randn(dim, in_dim, generator=gen, dtype=dtype))
        self.b = torch.nn.Parameter(0.1 * torch.randn(dim, generator=gen, dtype=dtype))

    def forward(self, z, x):
        return torch.tanh(z @ self.W.T + x @ self.U.T + self.b)
