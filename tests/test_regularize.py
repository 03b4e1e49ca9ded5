"""Jacobian penalty (Hutchinson) and spectral radius (power iteration) against exact values."""

from __future__ import annotations

import math

import pytest
import torch
from problems import TanhCell

import deqkit as dk

D64 = torch.float64


class Cell(TanhCell):
    """The shared tanh cell with a state of its own width (x has 3 features)."""

    def initial_state(self, x):
        return x.new_zeros(x.shape[0], self.W.shape[0])


def _tanh_map(dim=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(dim, dim, generator=gen, dtype=D64)
    b = torch.randn(dim, generator=gen, dtype=D64)
    return A, b, (lambda z: torch.tanh(z @ A.T + b))


def _exact_frobenius(f, z):
    """Per-sample ‖J‖²_F / D from the dense Jacobian."""
    out = []
    for zi in z:
        J = torch.autograd.functional.jacobian(lambda v: f(v.unsqueeze(0)).squeeze(0), zi)
        out.append(J.square().sum() / zi.numel())
    return torch.stack(out)


def test_hutchinson_estimate_is_unbiased():
    _, _, f = _tanh_map()
    z = torch.randn(4, 5, generator=torch.Generator().manual_seed(1), dtype=D64)
    exact = _exact_frobenius(f, z)
    draws = 4000
    # One single-probe estimate per row of a repeated batch: `draws` independent draws per sample.
    rows = z.repeat(draws, 1)
    gen = torch.Generator().manual_seed(2)
    est = dk.jacobian_penalty(f, rows, reduction="none", generator=gen).view(draws, 4)
    mean, se = est.mean(0), est.std(0) / math.sqrt(draws)
    assert ((mean - exact).abs() <= 3 * se).all(), (mean, exact, se)
    assert (se < 0.1 * exact).all()  # the check has power: the error bars are tight


def test_penalty_mean_reduction_vecs_and_pytree_states():
    A = torch.diag(torch.tensor([0.2, 0.4, 0.6, 0.8], dtype=D64))
    gen = torch.Generator().manual_seed(0)
    est = dk.jacobian_penalty(
        lambda z: z @ A.T, torch.zeros(3000, 4, dtype=D64), vecs=2, generator=gen
    )
    assert est.item() == pytest.approx(A.square().sum().item() / 4, rel=0.03)
    # a tuple state: J is block-diagonal diag(0.5 I_2, 2 I_3) over D = 5 entries
    state = (torch.zeros(3000, 2, dtype=D64), torch.zeros(3000, 3, dtype=D64))
    est = dk.jacobian_penalty(lambda s: (0.5 * s[0], 2.0 * s[1]), state, generator=gen)
    assert est.item() == pytest.approx((2 * 0.25 + 3 * 4.0) / 5, rel=0.03)


def test_penalty_gradient_matches_finite_differences():
    A0, b, _ = _tanh_map(dim=4)
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(3), dtype=D64)

    def penalty(A):
        gen = torch.Generator().manual_seed(7)  # same probes at every call: a smooth function of A
        return dk.jacobian_penalty(lambda v: torch.tanh(v @ A.T + b), z, vecs=3, generator=gen)

    A = A0.clone().requires_grad_()
    (grad,) = torch.autograd.grad(penalty(A), A)
    eps = 1e-6
    fd = torch.zeros_like(A0)
    for i in range(4):
        for j in range(4):
            e = torch.zeros_like(A0)
            e[i, j] = eps
            fd[i, j] = (penalty(A0 + e) - penalty(A0 - e)) / (2 * eps)
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-8)


def test_spectral_radius_of_known_matrices():
    # per-sample matrices: symmetric, non-normal, a dominant complex pair, a negative eigenvalue
    theta = 0.7
    rot = 0.8 * torch.tensor(
        [[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]]
    )
    mats = torch.zeros(4, 3, 3, dtype=D64)
    mats[0] = torch.tensor([[0.5, 0.2, 0.0], [0.2, 0.3, 0.1], [0.0, 0.1, 0.9]])
    mats[1] = torch.tensor([[0.6, 5.0, 0.0], [0.0, 0.3, 5.0], [0.0, 0.0, 0.2]])
    mats[2, :2, :2] = rot
    mats[2, 2, 2] = 0.3
    mats[3] = torch.diag(torch.tensor([0.1, -1.3, 0.7], dtype=D64))
    expected = torch.linalg.eigvals(mats).abs().amax(dim=1)
    gen = torch.Generator().manual_seed(0)
    rho = dk.spectral_radius(
        lambda z: torch.einsum("bij,bj->bi", mats, z),
        torch.zeros(4, 3, dtype=D64),
        n_iter=400,
        generator=gen,
    )
    torch.testing.assert_close(rho, expected, rtol=1e-2, atol=0)
    assert not rho.requires_grad


def test_spectral_radius_of_deq_cell_bounds_its_contraction():
    cell = Cell(dim=6, scale=0.5)
    x = torch.randn(5, 3, dtype=D64)
    z, _ = dk.DEQ(cell, tol=1e-10)(x)
    rho = dk.spectral_radius(lambda v: cell(v, x), z, n_iter=200)
    # J = diag(tanh') W with ‖W‖₂ = 0.5 and 0 < tanh' <= 1
    assert (rho > 0).all() and (rho <= 0.5 + 1e-6).all()


def test_deq_layer_returns_jacobian_penalty():
    cell = Cell(dim=6)
    x = torch.randn(4, 3, dtype=D64)
    deq = dk.DEQ(cell, tol=1e-10, jac_reg_prob=1.0, jac_reg_vecs=2)
    torch.manual_seed(0)
    z, sol = deq(x)
    assert sol.outputs.jac_loss.requires_grad and sol.outputs.jac_loss.dim() == 0
    exact = _exact_frobenius(lambda v: cell(v, x), sol.z.detach()).mean()
    assert sol.outputs.jac_loss.item() == pytest.approx(exact.item(), rel=1.0)  # a 2-probe estimate
    (z.sum() + sol.outputs.jac_loss).backward()
    assert cell.W.grad is not None and torch.isfinite(cell.W.grad).all()
    # switched off, in eval mode, without grad: no penalty
    assert dk.DEQ(cell)(x)[1].outputs.jac_loss is None
    assert deq.eval()(x)[1].outputs.jac_loss is None
    deq.train()
    with torch.no_grad():
        assert deq(x)[1].outputs.jac_loss is None


def test_jac_reg_probability_per_call():
    cell = Cell(dim=4)
    x = torch.randn(2, 3, dtype=D64)
    deq = dk.DEQ(cell, tol=1e-6, jac_reg_prob=0.5)
    torch.manual_seed(0)
    drawn = [bool(deq(x)[1].outputs.jac_loss != 0) for _ in range(40)]
    assert 8 <= sum(drawn) <= 32
    with pytest.raises(ValueError, match="jac_reg_prob"):
        dk.DEQ(cell, jac_reg_prob=1.5)


def test_errors():
    with pytest.raises(ValueError, match="does not depend on z"):
        dk.jacobian_penalty(lambda z: torch.ones_like(z), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="reduction"):
        dk.jacobian_penalty(lambda z: z, torch.zeros(2, 2), reduction="sum")
    with pytest.raises(TypeError, match="vecs"):
        dk.jacobian_penalty(lambda z: z, torch.zeros(2, 2), vecs=1.5)
