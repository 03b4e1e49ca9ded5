"""Dense Newton states and Jacobian products of the incremental RNN (float64)."""

from __future__ import annotations

import torch

import deqkit as dk
from deqkit.zoo.irnn import IncrementalRNN
from deqkit.zoo.irnn.dense import dense_product_norms, dense_products, dense_states

TIGHT = dict(
    solver="broyden",
    tol=1e-12,
    max_iter=300,
    stop_mode="abs",
    backward=dk.Implicit(solver="broyden", tol=1e-13, max_iter=300, stop_mode="abs"),
)


def _rnn(alpha: float, scale: float = 1.0) -> IncrementalRNN:
    torch.manual_seed(0)
    return IncrementalRNN(
        2, 5, activation="tanh", recurrent="stable", alpha=alpha, init_scale=scale, deq=TIGHT
    ).double()


def _x(batch: int = 2, steps: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.randn(batch, steps, 2, dtype=torch.float64, generator=g)


def test_dense_states_solve_the_step_equation_and_match_the_deq_solver():
    rnn, x = _rnn(0.3), _x()
    states = dense_states(rnn, x)
    assert float(states.residual.max()) < 1e-12
    with torch.no_grad():
        h, sol = rnn(x)
    assert bool(sol.converged.all())
    assert torch.allclose(states.h, h, atol=1e-10)


def test_dense_products_match_autograd_through_the_implicit_solves():
    # ∂h_T/∂h_1 by autograd: the model's own deqkit solves from h_1 over x_2..x_T, with the
    # implicit (adjoint) gradient of every step; against J_T ⋯ J_2 from the closed form.
    for alpha in (1.0, 0.3):
        rnn, x = _rnn(alpha), _x()
        states = dense_states(rnn, x)
        products = dense_products(rnn, states)  # (B, T - 1, H, H)
        h1 = states.h[:, 0].clone()

        def last(h0, rnn=rnn, x=x):
            return rnn(x[:, 1:], h0=h0)[0][:, -1].sum(0)  # samples are independent

        auto = torch.autograd.functional.jacobian(last, h1)  # (H, B, H)
        for b in range(x.shape[0]):
            assert torch.allclose(auto[:, b, :], products[b, -1], atol=1e-9, rtol=1e-7), alpha
        norms = dense_product_norms(rnn, states)
        expected = torch.linalg.matrix_norm(products[:, -1], ord=2)
        assert torch.allclose(norms[:, -1], expected)


def test_small_alpha_keeps_the_product_norm_near_one():
    # The paper's claim for the exact equilibrium: as α → 0 each step's Jacobian tends to −I,
    # so ‖∂h_T/∂h_1‖ neither vanishes nor explodes; at α = 1 it decays here.
    x = _x(batch=2, steps=40)
    small = dense_product_norms(_rnn(0.05), dense_states(_rnn(0.05), x))[:, -1]
    large = dense_product_norms(_rnn(1.0, 0.3), dense_states(_rnn(1.0, 0.3), x))[:, -1]
    assert bool(((small > 0.5) & (small < 2.0)).all()), small
    assert bool((large < 0.1).all()), large
