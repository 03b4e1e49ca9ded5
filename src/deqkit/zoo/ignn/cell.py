"""The implicit graph layer X = φ(W X A + Ω₁ U A [+ Ω₂ U]) of Gu et al. (NeurIPS 2020).

States are node-major: a batch of B graphs padded to n nodes holds Z = Xᵀ as a (B, n, m) tensor,
so one graph is one DEQ sample and the solver's per-sample stopping freezes whole graphs, never
single nodes. With the aggregation operator P = A'ᵀ (sparse, block-diagonal over the batch),
(W X A)ᵀ = P Z Wᵀ. Gradients come from autograd through the sparse product, so the adjoint of a
directed graph uses Pᵀ = A' where it must (the reference code's hand-written W gradient used A
in place of Aᵀ; shared/reference/zoo.md §4).
"""

from __future__ import annotations

import math

import torch
from torch import nn

import deqkit as dk

from .wellposed import project_rows_l1

__all__ = ["IGNNCell", "IGNNLayer", "propagate"]


def propagate(operator: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """P h for a (B, n, d) node tensor and a sparse (B*n, B*n) operator, never densified.

    >>> p = torch.tensor([[0.0, 0.0], [1.0, 0.0]]).to_sparse()  # node 1 receives from node 0
    >>> propagate(p, torch.tensor([[[2.0], [5.0]]])).tolist()
    [[[0.0], [2.0]]]
    """
    b, n, d = h.shape
    return torch.sparse.mm(operator, h.reshape(b * n, d)).reshape(b, n, d)


class IGNNCell(nn.Module):
    """f(Z) = ReLU(P Z Wᵀ + B): the fixed-point map of one implicit graph layer.

    Args:
        hidden: the state width m (W is m × m).

    >>> cell = IGNNCell(4)
    >>> p = torch.eye(3).to_sparse()
    >>> cell(torch.zeros(1, 3, 4), torch.ones(1, 3, 4), p).shape
    torch.Size([1, 3, 4])
    """

    def __init__(self, hidden: int):
        super().__init__()
        bound = 1.0 / math.sqrt(hidden)
        self.weight = nn.Parameter(torch.empty(hidden, hidden).uniform_(-bound, bound))

    def forward(self, z: torch.Tensor, injection: torch.Tensor, operator: torch.Tensor):
        return torch.relu(propagate(operator, z @ self.weight.T) + injection)

    def initial_state(self, injection: torch.Tensor) -> torch.Tensor:
        """Picard starts from zero, as in the paper."""
        return torch.zeros_like(injection)

    def infinity_norm(self) -> float:
        """‖W‖_∞, the largest row ℓ1 norm (an upper bound on λ_pf(|W|))."""
        return float(self.weight.detach().abs().sum(1).max())


class IGNNLayer(nn.Module):
    """One implicit graph layer: injection Ω₁ U A (+ Ω₂ U), then the equilibrium of IGNNCell.

    Args:
        in_features: node feature width p.
        hidden: state width m.
        kappa: the well-posedness margin κ < 1: rows of W are kept in the ℓ1 ball κ / λ_pf.
        omega2: add the un-aggregated Ω₂ U term to the injection.
        **deq_options: keyword arguments of :class:`deqkit.DEQ`.

    >>> _ = torch.manual_seed(0)
    >>> layer = IGNNLayer(2, 4, tol=1e-6, max_iter=300)
    >>> p = torch.tensor([[0.5, 0.0], [0.5, 0.5]]).to_sparse()
    >>> layer.project_(0.5)
    >>> z, sol = layer(torch.ones(1, 2, 2), p)
    >>> z.shape, sol.status.name
    (torch.Size([1, 2, 4]), 'CONVERGED')
    """

    def __init__(
        self, in_features: int, hidden: int, kappa: float = 0.9, omega2: bool = False, **deq_options
    ):
        super().__init__()
        if not 0.0 < kappa < 1.0:
            raise ValueError(f"kappa must be in (0, 1) for well-posedness, got {kappa!r}")
        self.kappa = float(kappa)
        self.omega1 = nn.Linear(in_features, hidden, bias=False)
        self.omega2 = nn.Linear(in_features, hidden, bias=False) if omega2 else None
        self.deq = dk.DEQ(IGNNCell(hidden), **deq_options)

    @property
    def cell(self) -> IGNNCell:
        """The fixed-point map (holds W)."""
        return self.deq.cell

    def injection(self, u: torch.Tensor, operator: torch.Tensor) -> torch.Tensor:
        """B = (Ω₁ U A)ᵀ [+ (Ω₂ U)ᵀ], computed once per forward, outside the solve."""
        b = propagate(operator, self.omega1(u))
        return b if self.omega2 is None else b + self.omega2(u)

    @torch.no_grad()
    def project_(self, lambda_pf: float) -> None:
        """Project W's rows onto the ℓ1 ball of radius κ / λ_pf (in place)."""
        w = self.cell.weight
        w.copy_(project_rows_l1(w, self.kappa / lambda_pf))

    def forward(self, u: torch.Tensor, operator: torch.Tensor) -> tuple[torch.Tensor, dk.Solution]:
        return self.deq(self.injection(u, operator), operator)
