"""Stopping rules and edge cases of the torch loop (issue 11): the "mixed" rule at z* = 0, the
empty batch, and NewtonKrylov's autodiff JVP through BatchNorm in train mode."""

from __future__ import annotations

import pytest
import torch

import deqkit as dk
from deqkit.core import STOP_MODES, STOP_SCOPES, stop_residual
from deqkit.solvers import iterate

F64 = torch.float64


def test_shared_names():
    assert STOP_MODES == ("rel", "abs", "mixed") and STOP_SCOPES == ("sample", "batch")
    assert dk.core.DEFAULTS["stop_scope"] == "sample"


@pytest.mark.parametrize("solver", ["fixed_point", "anderson", "broyden", "newton_krylov"])
def test_mixed_rule_stops_at_a_zero_fixed_point_where_rel_cannot(solver):
    gen = torch.Generator().manual_seed(0)
    w = 0.8 * torch.linalg.qr(torch.randn(16, 16, generator=gen, dtype=F64))[0]

    def f(z):  # z* = 0: ‖f(z) − z‖ / ‖f(z)‖ stays near (1 − 0.8) / 0.8, never below tol
        return torch.tanh(z @ w.T)

    z0 = torch.randn(4, 16, generator=gen, dtype=F64)
    rel = dk.solve(f, z0, solver, tol=1e-6, max_iter=100, on_failure="ignore")
    mixed = dk.solve(f, z0, solver, tol=1e-6, max_iter=100, stop_mode="mixed")
    assert mixed.status == dk.Status.CONVERGED
    if solver != "newton_krylov":  # Newton lands on 0.0 itself, where 0 / tiny = 0
        assert rel.status == dk.Status.MAX_ITER
    assert float(mixed.z.abs().max()) < 1e-5
    scale = torch.linalg.vector_norm(f(mixed.z), dim=1)
    torch.testing.assert_close(mixed.residual, mixed.abs_residual / (1 + scale))


def test_mixed_rule_is_relative_for_large_states():
    # z* = 1e6: "mixed" and "rel" stop within one step of each other, "abs" needs far more.
    def f(z):
        return 0.5 * z + 5e5

    z0 = torch.zeros(2, 3, dtype=F64)
    steps = {
        m: int(dk.solve(f, z0, "fixed_point", tol=1e-6, max_iter=200, stop_mode=m).nstep.max())
        for m in STOP_MODES
    }
    assert abs(steps["mixed"] - steps["rel"]) <= 1 and steps["abs"] > steps["rel"] + 15


def test_stop_residual_formulas():
    assert stop_residual("abs", 2.0, 3.0) == 2.0
    assert stop_residual("rel", 2.0, 4.0) == 0.5
    assert stop_residual("mixed", 2.0, 3.0) == 0.5


@pytest.mark.parametrize("scope", STOP_SCOPES)
def test_empty_batch_returns_an_empty_solution_without_calling_f(scope):
    def f(z):
        raise AssertionError("f must not be called on an empty batch")

    sol = iterate(dk.Anderson(), f, torch.zeros(0, 3), stop_scope=scope, trace=True)
    assert sol.status == dk.Status.CONVERGED and sol.nfev == 0
    assert sol.z.shape == (0, 3) and sol.converged.shape == sol.residual.shape == (0,)
    assert "converged=0/0" in repr(sol) and sol.message.startswith("CONVERGED")
    assert sol.stop_scope == scope


def _bn_cell():
    torch.manual_seed(0)
    bn, lin = torch.nn.BatchNorm1d(8).double().train(), torch.nn.Linear(8, 8).double()
    with torch.no_grad():
        lin.weight.mul_(0.3)
    x = torch.randn(5, 8, dtype=F64)
    return bn, (lambda z: torch.tanh(0.3 * bn(lin(z)) + x))


@pytest.mark.parametrize("scope", STOP_SCOPES)
def test_newton_krylov_autodiff_jvp_with_batchnorm_in_train_mode(scope):
    bn, f = _bn_cell()
    sol = dk.solve(f, torch.zeros(5, 8, dtype=F64), "newton_krylov", tol=1e-8, stop_scope=scope,
                   max_iter=100, on_failure="ignore")  # fmt: skip
    assert sol.status == dk.Status.CONVERGED or scope == "sample"  # BatchNorm couples samples
    with torch.no_grad():
        fz = f(sol.z)
    true = torch.linalg.vector_norm(fz - sol.z, dim=1) / torch.linalg.vector_norm(fz, dim=1)
    torch.testing.assert_close(sol.residual, true, rtol=1e-6, atol=1e-14)
    assert bn.num_batches_tracked.item() > 0
    assert bn.running_mean.dtype == F64 and not bn.running_mean.requires_grad
    # The JVP itself agrees with central differences of f.
    from deqkit.solvers.newton_krylov import _forward_jvp

    z, v = torch.randn(5, 8, dtype=F64), torch.randn(5, 8, dtype=F64)
    eps = 1e-6
    fd = (f(z + eps * v) - f(z - eps * v)) / (2 * eps)
    torch.testing.assert_close(_forward_jvp(f, z, v), fd, rtol=1e-6, atol=1e-8)


def test_newton_krylov_autodiff_jvp_without_forward_ad_is_refused_clearly():
    class NoJvp(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z):
            return 0.5 * z

        @staticmethod
        def backward(ctx, grad):
            return 0.5 * grad

    with pytest.raises(ValueError, match="jvp='finite_difference'"):
        dk.solve(lambda z: NoJvp.apply(z) + 1.0, torch.zeros(2, 2), "newton_krylov")
    sol = dk.solve(lambda z: NoJvp.apply(z) + 1.0, torch.zeros(2, 2),
                   dk.NewtonKrylov(jvp="finite_difference"), tol=1e-6)  # fmt: skip
    assert sol.status == dk.Status.CONVERGED


def test_batch_scope_broyden_state_serves_shine():
    a = torch.tensor(0.3, dtype=F64, requires_grad=True)
    x = torch.tensor([[1.0], [3.0]], dtype=F64)

    def f(z):
        return 0.5 * z + a * z.mean(0, keepdim=True) + x

    z, sol = dk.fixed_point(f, torch.zeros(2, 1, dtype=F64), "broyden", dk.Shine(refine=20),
                            tol=1e-12, max_iter=100, stop_scope="batch")  # fmt: skip
    assert sol.status == dk.Status.CONVERGED
    z.sum().backward()  # SHINE reads the joint (1, rank, B·D) estimate
    expected = 8 * x.mean().item() / (1 - 2 * 0.3) ** 2
    assert abs(a.grad.item() - expected) < 1e-2 * expected  # SHINE is an approximation


def test_pretraining_unroll_reports_the_mixed_residual():
    deq = dk.DEQ(lambda z, x: 0.5 * z + x, stop_mode="mixed", tol=1e-3).pretrain(4)
    z, sol = deq(torch.ones(2, 3, dtype=F64))
    prev = 2 * (z - 1.0)  # the unroll's residual is f(prev) − prev, with f(prev) = z
    abs_r = torch.linalg.vector_norm(z - prev, dim=1)
    torch.testing.assert_close(sol.abs_residual, abs_r)
    torch.testing.assert_close(sol.residual, abs_r / (1 + torch.linalg.vector_norm(z, dim=1)))
