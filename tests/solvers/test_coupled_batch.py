"""f that couples samples (batch means, BatchNorm in train mode, one unbatched state): the
reported residuals and status are those of f at the returned z, and stop_scope="batch" solves the
batch as one system until every sample converges (issue 11, item 1)."""

from __future__ import annotations

import pytest
import torch

import deqkit as dk
from deqkit.solvers import iterate

F64 = torch.float64
SOLVERS = {
    "fixed_point": dk.FixedPoint(),
    "anderson": dk.Anderson(),
    "broyden": dk.Broyden(),
    "broyden_ls": dk.Broyden(line_search=True),
    "newton_krylov": dk.NewtonKrylov(),
}


def _tanh_mean():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(32, 32, generator=gen, dtype=F64)
    w = 0.9 * w / torch.linalg.matrix_norm(w, 2)
    scale = torch.tensor([0.1, 0.1, 0.1, 3, 3, 3], dtype=F64)[:, None]
    x = torch.randn(6, 32, generator=gen, dtype=F64) * scale

    def f(z):
        return torch.tanh(z @ w.T + x) + 0.5 * torch.tanh(z.mean(0, keepdim=True))

    return f, torch.zeros(6, 32, dtype=F64), {"tol": 1e-6}


def _linear_strong():
    gen = torch.Generator().manual_seed(0)
    scale = torch.tensor([0.1, 0.1, 0.1, 3, 3, 3], dtype=F64)[:, None]
    x = torch.randn(6, 32, generator=gen, dtype=F64) * scale

    def f(z):
        return 0.5 * z + 0.45 * z.mean(0, keepdim=True) + x

    return f, torch.zeros(6, 32, dtype=F64), {"tol": 1e-6, "stop_mode": "abs"}


def _batchnorm():
    torch.manual_seed(1)
    bn, lin = torch.nn.BatchNorm1d(32).double().train(), torch.nn.Linear(32, 32).double()
    with torch.no_grad():
        lin.weight.mul_(0.5)
    gen = torch.Generator().manual_seed(1)
    scale = torch.tensor([0.1, 0.1, 0.1, 3, 3, 3], dtype=F64)[:, None]
    x = torch.randn(6, 32, generator=gen, dtype=F64) * scale

    def f(z):
        return 0.5 * torch.tanh(bn(lin(z))) + x

    return f, torch.zeros(6, 32, dtype=F64), {"tol": 1e-6}


def _unbatched():
    # A jaxopt-style state zeros(200): 200 one-element "samples" coupled by the matrix.
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(200, 200, generator=gen, dtype=F64)
    a = 0.9 * a / torch.linalg.matrix_norm(a, 2)
    c = torch.randn(200, generator=gen, dtype=F64)
    return (lambda z: torch.tanh(a @ z + c)), torch.zeros(200, dtype=F64), {"tol": 1e-6}


PROBLEMS = {
    "tanh_mean": _tanh_mean,
    "linear_strong": _linear_strong,
    "batchnorm": _batchnorm,
    "unbatched": _unbatched,
}


def _true_residual(f, sol, stop_mode):
    with torch.no_grad():
        z = sol.z.reshape(sol.converged.shape[0], -1)
        fz = f(sol.z).reshape(z.shape)
    abs_r = torch.linalg.vector_norm(fz - z, dim=1)
    return abs_r if stop_mode == "abs" else abs_r / torch.linalg.vector_norm(fz, dim=1)


@pytest.mark.parametrize("solver", sorted(SOLVERS))
@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_sample_scope_reports_the_residuals_of_the_returned_z(problem, solver):
    f, z0, opts = PROBLEMS[problem]()
    sol = dk.solve(f, z0, SOLVERS[solver], max_iter=60, on_failure="ignore", **opts)
    true = _true_residual(f, sol, opts.get("stop_mode", "rel"))
    torch.testing.assert_close(sol.residual, true, rtol=1e-6, atol=1e-13)
    assert sol.converged.tolist() == (true <= opts["tol"]).tolist()
    if sol.status == dk.Status.CONVERGED:
        assert bool((true <= opts["tol"]).all())


def test_the_issue_reproduction_no_longer_reports_a_false_converged():
    torch.manual_seed(0)
    w = torch.randn(32, 32)
    w = 0.9 * w / torch.linalg.matrix_norm(w, 2)
    x = torch.randn(6, 32) * torch.tensor([0.1, 0.1, 0.1, 3, 3, 3])[:, None]

    def f(z):
        return torch.tanh(z @ w.T + x) + 0.5 * torch.tanh(z.mean(0, keepdim=True))

    sol = dk.solve(f, torch.zeros(6, 32), solver="anderson", tol=1e-6, max_iter=200,
                   on_failure="ignore")  # fmt: skip
    true = _true_residual(f, sol, "rel")
    assert sol.status != dk.Status.CONVERGED or bool((true <= 1e-6).all())
    torch.testing.assert_close(sol.residual, true, rtol=1e-4, atol=0.0)
    fixed = dk.solve(f, torch.zeros(6, 32), solver="anderson", tol=1e-6, max_iter=200,
                     stop_scope="batch")  # fmt: skip
    assert fixed.status == dk.Status.CONVERGED
    assert bool((_true_residual(f, fixed, "rel") <= 1e-6).all())


BATCH_CASES = [
    (p, s)
    for p in sorted(PROBLEMS)
    for s in sorted(SOLVERS)
    if not (p == "linear_strong" and s == "fixed_point")  # rate 0.95: needs > 200 steps
]


@pytest.mark.parametrize(("problem", "solver"), BATCH_CASES)
def test_batch_scope_reaches_a_true_converged(problem, solver):
    f, z0, opts = PROBLEMS[problem]()
    sol = dk.solve(f, z0, SOLVERS[solver], max_iter=200, stop_scope="batch", **opts)
    assert sol.status == dk.Status.CONVERGED
    true = _true_residual(f, sol, opts.get("stop_mode", "rel"))
    assert bool((true <= opts["tol"]).all())
    torch.testing.assert_close(sol.residual, true, rtol=1e-6, atol=1e-13)
    assert len(set(sol.nstep.tolist())) == 1  # the batch stops together
    assert sol.stop_scope == "batch" and "stop_scope='batch'" in repr(sol)


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_sample_scope_does_not_converge_where_batch_scope_does(problem):
    """Anderson, the default solver: per-sample freezing fails on every coupled problem here."""
    f, z0, opts = PROBLEMS[problem]()
    sample = dk.solve(f, z0, "anderson", max_iter=200, on_failure="ignore", **opts)
    batch = dk.solve(f, z0, "anderson", max_iter=200, stop_scope="batch", **opts)
    assert sample.status != dk.Status.CONVERGED and batch.status == dk.Status.CONVERGED


def test_the_truth_check_evaluates_f_again_only_when_needed():
    calls = []
    rates = torch.tensor([[0.5], [0.5]], dtype=F64)

    def f(z):
        calls.append(z.clone())
        return rates * z + torch.tensor([[1.0], [100.0]], dtype=F64)

    sol = dk.solve(f, torch.zeros(2, 1, dtype=F64), "fixed_point", tol=1e-8, stop_mode="abs")
    # Sample 0 converges first and is frozen there: the last evaluation saw the returned z.
    assert sol.nstep[0] < sol.nstep[1]
    assert sol.nfev == int(sol.nstep.max()) == len(calls)
    assert torch.equal(calls[-1], sol.z)
    # Sample 1 diverges: the returned z is its best iterate, not the one f saw last.
    calls.clear()
    rates[1] = 3.0
    bad = dk.solve(f, torch.zeros(2, 1, dtype=F64), "fixed_point", tol=1e-8, stop_mode="abs",
                   divergence_ratio=10.0, on_failure="ignore")  # fmt: skip
    assert bad.status == dk.Status.DIVERGED
    assert bad.nfev == int(bad.nstep.max()) + 1 == len(calls)
    assert torch.equal(calls[-1], bad.z)
    torch.testing.assert_close(bad.abs_residual, (f(bad.z) - bad.z).abs()[:, 0])


def test_batch_scope_independent_f_gives_the_same_fixed_point():
    gen = torch.Generator().manual_seed(3)
    w = 0.5 * torch.linalg.qr(torch.randn(8, 8, generator=gen, dtype=F64))[0]
    x = torch.randn(4, 8, generator=gen, dtype=F64)

    def f(z):
        return torch.tanh(z @ w.T + x)

    for solver in SOLVERS.values():
        sample = dk.solve(f, torch.zeros(4, 8, dtype=F64), solver, tol=1e-10, max_iter=100)
        batch = dk.solve(f, torch.zeros(4, 8, dtype=F64), solver, tol=1e-10, max_iter=100,
                         stop_scope="batch")  # fmt: skip
        assert batch.status == sample.status == dk.Status.CONVERGED
        torch.testing.assert_close(batch.z, sample.z, rtol=0, atol=1e-8)


def test_batch_scope_failures_stop_the_whole_batch():
    def nan_later(z):
        out = 0.5 * z + 1.0
        return torch.where(z[:1] > 1.5, float("nan"), 1.0) * out

    sol = dk.solve(nan_later, torch.zeros(3, 2, dtype=F64), "fixed_point", tol=1e-10,
                   stop_scope="batch", on_failure="ignore")  # fmt: skip
    assert sol.status == dk.Status.NONFINITE
    assert bool(torch.isfinite(sol.z).all()) and len(set(sol.nstep.tolist())) == 1
    grow = dk.solve(lambda z: 3.0 * z + 1.0, torch.zeros(2, 2, dtype=F64), "fixed_point",
                    stop_scope="batch", divergence_ratio=10.0, on_failure="ignore")  # fmt: skip
    assert grow.status == dk.Status.DIVERGED and grow.nstep.tolist() == [4, 4]


def test_batch_scope_keeps_the_iterate_with_the_smallest_worst_residual():
    def f(z):
        return -z + torch.tensor([[1.0], [2.0]])

    sol = iterate(dk.FixedPoint(), f, torch.zeros(2, 1), tol=1e-6, max_iter=6, stop_scope="batch",
                  trace=True)  # fmt: skip
    assert sol.status == dk.Status.MAX_ITER and sol.nfev == 6
    assert sol.trace.shape == (2, 6)
    torch.testing.assert_close(sol.residual, sol.trace.min(dim=1).values)


def test_stop_scope_reaches_fixed_point_and_deq():
    def cell(z, x):
        return 0.5 * z + 0.4 * z.mean(0, keepdim=True) + x

    x = torch.randn(5, 3, dtype=F64, requires_grad=True)
    z, sol = dk.fixed_point(lambda z: cell(z, x), torch.zeros(5, 3, dtype=F64), tol=1e-10,
                            stop_scope="batch")  # fmt: skip
    assert sol.status == dk.Status.CONVERGED and len(set(sol.nstep.tolist())) == 1
    deq = dk.DEQ(cell, tol=1e-10, stop_scope="batch")
    z2, sol2 = deq(x)
    assert "stop_scope='batch'" in repr(deq) and sol2.status == dk.Status.CONVERGED
    torch.testing.assert_close(z2, z)
    with pytest.raises(ValueError, match="stop_scope must be one of"):
        dk.DEQ(cell, stop_scope="all")
    with pytest.raises(ValueError, match="stop_scope must be one of"):
        dk.solve(cell, torch.zeros(1, 1), stop_scope="all")


def test_batch_scope_unrolled_backward_differentiates_the_joint_solve():
    a = torch.tensor(0.3, dtype=F64, requires_grad=True)
    x = torch.tensor([[1.0], [3.0]], dtype=F64)

    def f(z):
        return 0.5 * z + a * z.mean(0, keepdim=True) + x

    z, sol = dk.fixed_point(f, torch.zeros(2, 1, dtype=F64), "anderson", "unrolled", tol=1e-12,
                            max_iter=100, stop_scope="batch")  # fmt: skip
    z.sum().backward()
    # z* = 2 (a m + x) with m = mean(z*) = 2 x̄ / (1 − 2a): Σz* = 2m, d/da = 8 x̄ / (1 − 2a)²
    xbar = x.mean().item()
    expected = 8 * xbar / (1 - 2 * 0.3) ** 2
    assert sol.status == dk.Status.CONVERGED
    assert abs(a.grad.item() - expected) < 1e-8 * expected


def test_implicit_adjoint_follows_the_batch_scope():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(16, 16, generator=gen, dtype=F64)
    w = 0.9 * w / torch.linalg.matrix_norm(w, 2)
    x = torch.randn(6, 16, generator=gen, dtype=F64)
    x = x * torch.tensor([0.1] * 3 + [3.0] * 3, dtype=F64)[:, None]
    a = torch.tensor(0.3, dtype=F64, requires_grad=True)

    def f(z):
        return torch.tanh(z @ w.T + x) + a * torch.tanh(z.mean(0, keepdim=True))

    z, sol = dk.fixed_point(f, torch.zeros(6, 16, dtype=F64), "anderson",
                            dk.Implicit(tol=1e-10, max_iter=200), tol=1e-10, max_iter=200,
                            stop_scope="batch")  # fmt: skip
    (grad,) = torch.autograd.grad((z**2).sum(), a)
    assert sol.backward.status == dk.Status.CONVERGED and sol.backward.stop_scope == "batch"
    zu, _ = dk.fixed_point(f, torch.zeros(6, 16, dtype=F64), "fixed_point", "unrolled",
                           tol=1e-13, max_iter=400, stop_scope="batch")  # fmt: skip
    (expected,) = torch.autograd.grad((zu**2).sum(), a)
    torch.testing.assert_close(grad, expected, rtol=1e-8, atol=0.0)


def test_recipe_deq_section_takes_stop_scope():
    from deqkit.train.config import DEQConfig, deq_kwargs

    assert "stop_scope" not in deq_kwargs(DEQConfig())
    assert deq_kwargs(DEQConfig(stop_scope="batch"))["stop_scope"] == "batch"
    with pytest.raises(Exception, match="deq.stop_scope"):
        DEQConfig(stop_scope="all")
