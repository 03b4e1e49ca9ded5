"""Fixed-point correction: k sampled states with gradients, the last one always the implicit z*."""

from __future__ import annotations

import pytest
import torch
from problems import TanhCell

import deqkit as dk

D64 = torch.float64


class Cell(TanhCell):
    def initial_state(self, x):
        return x.new_zeros(x.shape[0], self.W.shape[0])


def _grads(out, cell):
    return torch.autograd.grad(out, list(cell.parameters()))


def _x(batch=4):
    return torch.randn(batch, 3, generator=torch.Generator().manual_seed(1), dtype=D64)


def test_correction_weights_by_hand():
    states = [torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([2.0])]
    target = torch.tensor([2.0])
    loss = dk.fixed_point_correction(torch.nn.functional.mse_loss, states, target, gamma=0.8)
    assert loss.item() == pytest.approx(0.64 * 4.0 + 0.8 * 1.0 + 0.0)
    flat = dk.fixed_point_correction(torch.nn.functional.mse_loss, states, target, gamma=1.0)
    assert flat.item() == pytest.approx(5.0)
    with pytest.raises(ValueError, match="gamma"):
        dk.fixed_point_correction(torch.nn.functional.mse_loss, states, target, gamma=0.0)
    with pytest.raises(ValueError, match="non-empty list"):
        dk.fixed_point_correction(torch.nn.functional.mse_loss, [], target)
    with pytest.raises(ValueError, match="scalar"):
        dk.fixed_point_correction(lambda s, t: s - t, states, target)


def test_final_state_keeps_implicit_gradient_when_solver_stops_early():
    cell, x = Cell(), _x()
    kw = dict(tol=1e-10, max_iter=60, backward=dk.Implicit(tol=1e-12, max_iter=100))
    z, sol = dk.DEQ(cell, n_states=3, **kw)(x)
    assert sol.nstep.max().item() < 20  # stopped before the first sampling point (20)
    assert len(sol.outputs.states) == 3 and sol.outputs.states[-1] is z
    assert all(s.requires_grad for s in sol.outputs.states)
    got = _grads(
        dk.fixed_point_correction(lambda s, t: s.sum(), sol.outputs.states, None, gamma=1.0), cell
    )
    assert sol.backward is not None and sol.backward.status == dk.Status.CONVERGED
    z_ref, _ = dk.DEQ(cell, **kw)(x)
    ref = _grads(3 * z_ref.sum(), cell)  # three copies of z*, each with the implicit gradient
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_reached_states_get_one_step_gradients_and_last_is_implicit():
    cell, x = Cell(scale=0.9), _x()
    deq = dk.DEQ(
        cell, solver="fixed_point", tol=1e-12, max_iter=30, n_states=3, on_failure="ignore",
        backward=dk.Implicit(tol=1e-12, max_iter=200),
    )  # fmt: skip
    z, sol = deq(x)
    assert sol.nstep.min().item() >= 20  # both intermediate points (10, 20) were reached
    first, second, last = sol.outputs.states
    assert last is z
    # intermediate states lie along the path: farther from z* early, closer later
    err = [torch.linalg.vector_norm(s.detach() - sol.z) for s in (first, second)]
    assert err[0] > err[1] > 0
    # state 10 is f(s10) with the one-step (Jacobian-free) gradient at s10
    s10 = dk.solve(lambda v: cell(v, x), torch.zeros(4, 5, dtype=D64), "fixed_point", tol=1e-30,
                   max_iter=10, on_failure="ignore").z  # fmt: skip
    torch.testing.assert_close(first.detach(), cell(s10, x).detach())
    for a, b in zip(_grads(first.sum(), cell), _grads(cell(s10, x).sum(), cell), strict=True):
        torch.testing.assert_close(a, b)


def test_phantom_backward_is_used_for_intermediate_states():
    cell, x = Cell(), _x()
    deq = dk.DEQ(cell, solver="fixed_point", backward=dk.Phantom(steps=2), tol=1e-30,
                 max_iter=12, n_states=2, on_failure="ignore")  # fmt: skip
    z, sol = deq(x)
    s6 = dk.solve(lambda v: cell(v, x), torch.zeros(4, 5, dtype=D64), "fixed_point", tol=1e-30,
                  max_iter=6, on_failure="ignore").z  # fmt: skip
    torch.testing.assert_close(sol.outputs.states[0].detach(), cell(cell(s6, x), x).detach())
    assert sol.outputs.states[1] is z


def test_unrolled_states_carry_the_unrolled_graph_and_pytree_states():
    cell, x = Cell(), _x(2)

    def f(state):
        a, b = state
        return cell(b, x), cell(a, x)

    z0 = (torch.zeros(2, 5, dtype=D64), torch.zeros(2, 5, dtype=D64))
    z, sol = dk.fixed_point(f, z0, "fixed_point", "unrolled", tol=1e-30, max_iter=8, n_states=4,
                            on_failure="ignore")  # fmt: skip
    assert len(sol.outputs.states) == 4 and sol.outputs.states[-1] is z
    assert all(isinstance(s, tuple) and s[0].requires_grad for s in sol.outputs.states)
    loss = dk.fixed_point_correction(
        lambda s, t: (s[0] - t).square().mean(), sol.outputs.states, 0.5
    )
    loss.backward()
    assert torch.isfinite(cell.W.grad).all() and cell.W.grad.abs().sum() > 0


def test_no_grad_states_and_validation():
    cell, x = Cell(), _x()
    with torch.no_grad():
        z, sol = dk.DEQ(cell, n_states=2, tol=1e-8)(x)
    assert len(sol.outputs.states) == 2 and not any(s.requires_grad for s in sol.outputs.states)
    assert dk.DEQ(cell)(x)[1].outputs.states is None
    with pytest.raises(ValueError, match="n_states"):
        dk.DEQ(cell, n_states=5, max_iter=4)
    with pytest.raises(ValueError, match="n_states"):
        dk.DEQ(cell, n_states=0)
