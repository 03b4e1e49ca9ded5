"""Exact iRNN states and ∂h_t/∂h_1 by dense linear algebra, for small hidden sizes.

The step equation F(g) = φ(U(g + h_{t−1}) + W x_t + b) − α ⊙ (g − h_{t−1}) = 0 has the dense
Jacobian ∂F/∂g = DU − diag α (D = diag φ′ at the point), so a batched Newton iteration with
backtracking on ‖F‖ solves it to machine precision in a few steps when the hidden size is small
(16 here: one batched 16×16 solve per iteration). At the root the implicit function theorem
gives the per-step Jacobian ∂h_t/∂h_{t−1} = (diag α − DU)⁻¹(diag α + DU)
(:meth:`IncrementalCell.step_jacobian`), and ∂h_t/∂h_1 = J_t ⋯ J_2 is their product.

This is a measurement tool (no gradients flow through it); training uses the deqkit solvers of
:class:`IncrementalRNN`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .cell import ACTIVATIONS, IncrementalCell, _activation_derivative
from .model import IncrementalRNN

__all__ = [
    "DenseStates",
    "dense_product_norms",
    "dense_products",
    "dense_states",
    "newton_root",
    "step_products",
]


@dataclass(frozen=True)
class DenseStates:
    """States h (B, T, H) from dense Newton solves, with the drive W x_t + b (B, T, H), the
    recurrent matrix U, each step's final max-norm residual ‖F(h_t)‖_∞ (B, T) and Newton
    iterations (T,)."""

    h: torch.Tensor
    drive: torch.Tensor
    U: torch.Tensor
    residual: torch.Tensor
    iterations: torch.Tensor


def newton_root(
    cell: IncrementalCell,
    h_prev: torch.Tensor,
    wx: torch.Tensor,
    U: torch.Tensor,
    *,
    tol: float = 1e-12,
    max_iter: int = 100,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The root g of F (B, H) by batched Newton from g = h_prev, halving each sample's step
    until ‖F‖ decreases; returns (g, max-norm residual (B,), iterations).

    >>> cell = IncrementalCell(2, 4, activation="tanh", recurrent="stable").double()
    >>> h_prev, wx = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    >>> g, res, it = newton_root(cell, h_prev, wx, cell.recurrent_matrix())
    >>> bool(res.max() < 1e-12), it < 20
    (True, True)
    """
    phi = ACTIVATIONS[cell.activation]
    alpha = cell.alpha
    eye = torch.diag_embed(alpha.expand_as(h_prev))

    def residual(g):
        pre = (g + h_prev) @ U.T + wx
        return phi(pre) - alpha * (g - h_prev), pre

    g = h_prev.clone()
    f, pre = residual(g)
    norm = f.norm(dim=-1)
    for it in range(max_iter):
        if norm.max() <= tol:
            return g, f.abs().amax(-1), it
        jac = _activation_derivative(cell.activation, pre).unsqueeze(-1) * U - eye
        step = torch.linalg.solve(jac, -f)
        scale = torch.ones_like(norm)
        for _ in range(30):  # backtracking: accept per sample once ‖F‖ decreases
            trial = g + scale.unsqueeze(-1) * step
            f_trial, pre_trial = residual(trial)
            n_trial = f_trial.norm(dim=-1)
            bad = ~(n_trial < (1 - 1e-4 * scale) * norm) & (norm > tol)
            if not bad.any():
                break
            scale = torch.where(bad, scale / 2, scale)
        g, f, pre, norm = trial, f_trial, pre_trial, n_trial
    return g, f.abs().amax(-1), max_iter


@torch.no_grad()
def dense_states(rnn: IncrementalRNN, x: torch.Tensor, *, tol: float = 1e-12) -> DenseStates:
    """Every exact state of ``rnn`` over x (B, T, input) by :func:`newton_root`, step by step.

    >>> rnn = IncrementalRNN(2, 4, activation="tanh", recurrent="stable").double()
    >>> s = dense_states(rnn, torch.randn(2, 5, 2, dtype=torch.float64))
    >>> s.h.shape, bool(s.residual.max() < 1e-12)
    (torch.Size([2, 5, 4]), True)
    """
    cell = rnn.cell
    U, drive = cell.recurrent_matrix(), cell.drive(x)
    h = x.new_zeros(x.shape[0], rnn.hidden)
    states, residuals, iterations = [], [], []
    for t in range(x.shape[1]):
        h, res, it = newton_root(cell, h, drive[:, t], U, tol=tol)
        states.append(h)
        residuals.append(res)
        iterations.append(it)
    return DenseStates(
        torch.stack(states, 1), drive, U, torch.stack(residuals, 1), torch.tensor(iterations)
    )


def step_products(
    cell: IncrementalCell, h: torch.Tensor, drive: torch.Tensor, U: torch.Tensor
) -> torch.Tensor:
    """∂h_t/∂h_1 = J_t ⋯ J_2 per sample for t = 2..T → (B, T − 1, H, H), from the closed-form
    per-step Jacobians (:meth:`IncrementalCell.step_jacobian`) at the states h (B, T, H) with
    their drives W x_t + b (B, T, H); exact where the states are exact roots.

    >>> cell = IncrementalCell(2, 4, activation="tanh", recurrent="stable")
    >>> h, drive = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    >>> step_products(cell, h, drive, cell.recurrent_matrix()).shape
    torch.Size([2, 4, 4, 4])
    """
    product = torch.eye(h.shape[-1], dtype=h.dtype, device=h.device).expand(h.shape[0], -1, -1)
    products = []
    for t in range(1, h.shape[1]):
        product = cell.step_jacobian(h[:, t], h[:, t - 1], drive[:, t], U) @ product
        products.append(product)
    return torch.stack(products, 1)


@torch.no_grad()
def dense_products(rnn: IncrementalRNN, states: DenseStates) -> torch.Tensor:
    """:func:`step_products` at the dense states → (B, T − 1, H, H).

    >>> rnn = IncrementalRNN(2, 4, activation="tanh", recurrent="stable").double()
    >>> s = dense_states(rnn, torch.randn(2, 5, 2, dtype=torch.float64))
    >>> dense_products(rnn, s).shape
    torch.Size([2, 4, 4, 4])
    """
    return step_products(rnn.cell, states.h, states.drive, states.U)


def dense_product_norms(rnn: IncrementalRNN, states: DenseStates) -> torch.Tensor:
    """‖∂h_t/∂h_1‖₂ per sample for t = 2..T → (B, T − 1) (spectral norms of
    :func:`dense_products`).

    >>> rnn = IncrementalRNN(2, 4, activation="tanh", recurrent="stable").double()
    >>> s = dense_states(rnn, torch.randn(2, 5, 2, dtype=torch.float64))
    >>> dense_product_norms(rnn, s).shape
    torch.Size([2, 4])
    """
    return torch.linalg.matrix_norm(dense_products(rnn, states), ord=2)
