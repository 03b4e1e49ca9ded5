"""The incremental RNN cell of Kag, Zhang & Saligrama (ICLR 2020): one step's equilibrium.

Each hidden state h_t is the equilibrium g* of the ODE τġ = F(g) driven by h_{t−1} and x_t,

    F(g) = φ(U(g + h_{t−1}) + W x_t + b) − α ⊙ (g − h_{t−1}),

so that α ⊙ (h_t − h_{t−1}) = φ(U(h_t + h_{t−1}) + W x_t + b). Differentiating the equilibrium
with D = diag φ'(·) gives the Cayley-type Jacobian

    ∂h_t/∂h_{t−1} = (diag α − DU)⁻¹ (diag α + DU),

which tends to −I as α → 0 where DU is invertible (the paper's identity-gradient argument, up to
the sign). The cell holds U, W, b and the positive vectors α and η (softplus of free parameters).

``recurrent="stable"`` writes U = (S − Sᵀ) − MᵀM − γI. Its symmetric part is negative definite, so
for every diagonal D with entries in [0, 1] the matrix −diag α + DU is Hurwitz: F has exactly one
root (the mean-value Jacobian of F between two roots would be singular otherwise) and every
eigenvalue of the Jacobian above has modulus below 1. ``recurrent="free"`` is the paper's
unconstrained U, whose equilibrium need not exist or be unique.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ACTIVATIONS", "IncrementalCell", "inverse_softplus"]

ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}


def inverse_softplus(value: float) -> float:
    """The x with softplus(x) = value (value > 0).

    >>> round(float(F.softplus(torch.tensor(inverse_softplus(0.3)))), 6)
    0.3
    """
    if value <= 0:
        raise ValueError(f"softplus only reaches positive values, got {value!r}")
    return value + math.log(-math.expm1(-value))


def _activation_derivative(name: str, pre: torch.Tensor) -> torch.Tensor:
    if name == "relu":
        return (pre > 0).to(pre.dtype)
    return 1.0 - torch.tanh(pre).square()


class IncrementalCell(nn.Module):
    """Parameters and the equilibrium residual F of one incremental-RNN step.

    Args:
        input_size, hidden: sizes of x_t and h_t.
        activation: "relu" or "tanh".
        alpha, eta: initial values of α and of every η (positive; learned unless ``learn_*``
            is False).
        euler_steps: K, the number of explicit Euler steps (one η vector per step).
        recurrent: "free" (the paper's U) or "stable" (U = (S − Sᵀ) − MᵀM − γI).
        gamma: γ of the stable form.
        init_scale: standard deviation of U's (or S's) entries times √hidden.

    >>> cell = IncrementalCell(2, 4, activation="tanh", recurrent="stable")
    >>> U = cell.recurrent_matrix()
    >>> bool(torch.linalg.eigvalsh(U + U.T).max() < 0)
    True
    """

    def __init__(
        self,
        input_size: int,
        hidden: int,
        *,
        activation: str = "relu",
        alpha: float = 1.0,
        eta: float = 1.0,
        learn_alpha: bool = True,
        learn_eta: bool = True,
        euler_steps: int = 1,
        recurrent: str = "free",
        gamma: float = 0.1,
        init_scale: float = 1.0,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if recurrent not in ("free", "stable"):
            raise ValueError(f"recurrent must be 'free' or 'stable', got {recurrent!r}")
        if euler_steps < 1:
            raise ValueError(f"euler_steps must be >= 1, got {euler_steps!r}")
        self.activation, self.recurrent, self.gamma = activation, recurrent, float(gamma)
        self.hidden, self.euler_steps = hidden, euler_steps
        self.input = nn.Linear(input_size, hidden)
        std = init_scale / math.sqrt(hidden)
        self.U = nn.Parameter(torch.randn(hidden, hidden) * std)
        # M starts small so that the stable U is dominated by its skew part (near-unit moduli).
        self.M = (
            nn.Parameter(torch.randn(hidden, hidden) * 0.1 * std) if recurrent == "stable" else None
        )
        alpha_raw = torch.full((hidden,), inverse_softplus(alpha))
        eta_raw = torch.full((euler_steps, hidden), inverse_softplus(eta))
        self.alpha_raw = nn.Parameter(alpha_raw, requires_grad=learn_alpha)
        self.eta_raw = nn.Parameter(eta_raw, requires_grad=learn_eta)

    @property
    def alpha(self) -> torch.Tensor:
        return F.softplus(self.alpha_raw)

    @property
    def eta(self) -> torch.Tensor:
        return F.softplus(self.eta_raw)

    def recurrent_matrix(self) -> torch.Tensor:
        """U itself (the free parameter, or the stable form built from S = self.U and M)."""
        if self.recurrent == "free":
            return self.U
        eye = torch.eye(self.hidden, dtype=self.U.dtype, device=self.U.device)
        return self.U - self.U.T - self.M.T @ self.M - self.gamma * eye

    def drive(self, x: torch.Tensor) -> torch.Tensor:
        """W x_t + b for every step at once: (B, T, input) -> (B, T, hidden)."""
        return self.input(x)

    def residual(
        self, g: torch.Tensor, h_prev: torch.Tensor, wx: torch.Tensor, U: torch.Tensor
    ) -> torch.Tensor:
        """F(g) = φ(U(g + h_prev) + wx) − α ⊙ (g − h_prev); zero exactly at h_t."""
        phi = ACTIVATIONS[self.activation]
        return phi((g + h_prev) @ U.T + wx) - self.alpha * (g - h_prev)

    def euler(
        self, h_prev: torch.Tensor, wx: torch.Tensor, U: torch.Tensor, start: str = "zero"
    ) -> torch.Tensor:
        """K explicit Euler steps g ← g + η_i ⊙ F(g) from g₀ = 0 ("zero", the paper) or h_prev.

        >>> cell = IncrementalCell(1, 3, alpha=0.5, eta=2.0)
        >>> h0, wx = torch.ones(2, 3), torch.zeros(2, 3)
        >>> U = torch.zeros(3, 3)
        >>> cell.euler(h0, wx, U)[0].tolist()  # K = 1 from 0: η α h_prev + η φ(U h_prev + wx)
        [1.0, 1.0, 1.0]
        """
        g = torch.zeros_like(h_prev) if start == "zero" else h_prev
        for eta in self.eta:
            g = g + eta * self.residual(g, h_prev, wx, U)
        return g

    def step_jacobian(
        self, h: torch.Tensor, h_prev: torch.Tensor, wx: torch.Tensor, U: torch.Tensor
    ) -> torch.Tensor:
        """∂h_t/∂h_{t−1} at an exact equilibrium: (B, H, H) = (diag α − DU)⁻¹(diag α + DU)."""
        pre = (h + h_prev) @ U.T + wx
        DU = _activation_derivative(self.activation, pre).unsqueeze(-1) * U
        A = torch.diag_embed(self.alpha.expand_as(h))
        return torch.linalg.solve(A - DU, A + DU)
