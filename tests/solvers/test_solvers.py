"""Every solver on problems with known fixed points, and the shared loop's semantics."""

import math
from dataclasses import dataclass

import pytest
import torch
from problems import SOLVER_NAMES, make_linear

import deqkit as dk
from deqkit.solvers import SOLVERS, iterate, make_solver

F64 = torch.float64


@pytest.mark.parametrize("solver", SOLVER_NAMES)
def test_linear_fixed_point_matches_closed_form(solver):
    prob = make_linear()
    sol = dk.solve(prob.f, torch.zeros(4, 6, dtype=F64), solver, tol=1e-12, max_iter=300)
    assert sol.status == dk.Status.CONVERGED
    torch.testing.assert_close(sol.z, prob.z_star(), atol=1e-10, rtol=0)
    assert (sol.residual <= 1e-12).all()


@pytest.mark.parametrize("solver", SOLVER_NAMES)
@pytest.mark.parametrize("stop_mode", ["abs", "rel"])
def test_stop_mode_is_honoured(solver, stop_mode):
    prob = make_linear(radius=0.8)
    sol = dk.solve(
        prob.f, torch.zeros(4, 6, dtype=F64), solver, tol=1e-6, max_iter=300, stop_mode=stop_mode
    )
    assert sol.status == dk.Status.CONVERGED and sol.stop_mode == stop_mode
    picked = sol.abs_residual if stop_mode == "abs" else sol.rel_residual
    torch.testing.assert_close(sol.residual, picked)
    assert (picked <= 1e-6).all()
    fz = prob.f(sol.z)
    abs_res = (fz - sol.z).norm(dim=1)
    torch.testing.assert_close(sol.abs_residual, abs_res)
    torch.testing.assert_close(sol.rel_residual, abs_res / fz.norm(dim=1))


def test_abs_and_rel_stop_at_different_points():
    """A state with a large norm meets a relative tolerance long before the same absolute one."""
    prob = make_linear(radius=0.9)
    prob.x = prob.x * 1e3
    z0 = torch.zeros(4, 6, dtype=F64)
    rel = dk.solve(prob.f, z0, "fixed_point", tol=1e-6, max_iter=500, stop_mode="rel")
    abs_ = dk.solve(prob.f, z0, "fixed_point", tol=1e-6, max_iter=500, stop_mode="abs")
    assert (rel.nstep < abs_.nstep).all()


def test_accelerated_solvers_beat_picard():
    gen = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(20, 20, generator=gen, dtype=F64))
    prob = make_linear(dim=20)
    prob.A = q @ torch.diag(torch.linspace(0.0, 0.95, 20, dtype=F64)) @ q.T
    z0 = torch.zeros(4, 20, dtype=F64)
    steps = {
        name: dk.solve(prob.f, z0, name, tol=1e-8, max_iter=500).nstep.max().item()
        for name in ("fixed_point", "anderson", "broyden")
    }
    assert steps["anderson"] < steps["fixed_point"] / 3
    assert steps["broyden"] < steps["fixed_point"] / 3


def test_unstable_fixed_point_root_finders_converge_picard_does_not():
    """z = −2z + 1 per element: plain iteration diverges (|f'| = 2), root finders converge."""
    f = lambda z: -2.0 * z + 1.0  # noqa: E731
    z0 = torch.zeros(3, 4, dtype=F64)
    for name in ("broyden", "anderson", "newton_krylov"):
        sol = dk.solve(f, z0, name, tol=1e-10, max_iter=50)
        assert sol.status == dk.Status.CONVERGED, name
        torch.testing.assert_close(sol.z, torch.full_like(z0, 1 / 3))
    bad = dk.solve(f, z0, "fixed_point", tol=1e-10, max_iter=50, on_failure="ignore")
    assert bad.status in (dk.Status.DIVERGED, dk.Status.MAX_ITER)
    assert not bad.converged.any()


def test_picard_divergence_is_reported_as_diverged():
    sol = dk.solve(
        lambda z: -2.0 * z + 1.0,
        torch.zeros(2, 3),
        "fixed_point",
        max_iter=100,
        on_failure="ignore",
    )
    assert sol.status == dk.Status.DIVERGED
    assert sol.nstep.max() < 100
    assert torch.isfinite(sol.z).all()


@pytest.mark.parametrize("solver", SOLVER_NAMES)
def test_per_sample_stopping_freezes_converged_samples(solver):
    """Sample 0 contracts fast, sample 1 slowly: different nstep, and sample 0 stops moving."""
    rates = torch.tensor([[0.05], [0.9]], dtype=F64)
    seen = []

    def f(z):
        seen.append(z[0].clone())
        return rates * torch.tanh(z) + 1.0

    sol = dk.solve(f, torch.zeros(2, 8, dtype=F64), solver, tol=1e-10, max_iter=200)
    assert sol.status == dk.Status.CONVERGED
    assert sol.nstep[0] < sol.nstep[1]
    first = next(i for i, z in enumerate(seen) if torch.equal(z, sol.z[0]))
    assert len(seen) - first > 2, "the hard sample should keep iterating"
    for z in seen[first:]:
        assert torch.equal(z, sol.z[0])


def test_nstep_and_nfev_counting():
    sol = dk.solve(lambda z: 0.5 * z + 1.0, torch.zeros(1, 1, dtype=F64), "fixed_point", tol=1e-3)
    # residual at z_k is 2^-k / (2 - 2^-k)... iteration k evaluates f(z_{k-1})
    expected = next(k for k in range(1, 50) if 0.5 ** (k - 1) / (2 - 0.5 ** (k - 1) * 1.0) <= 1e-3)
    assert sol.nstep.item() == expected
    assert sol.nfev == expected


def test_already_converged_start_stops_at_first_iteration():
    sol = dk.solve(lambda z: 0.5 * z + 1.0, torch.full((2, 3), 2.0, dtype=F64), tol=1e-8)
    assert sol.nstep.tolist() == [1, 1] and sol.nfev == 1


def test_best_iterate_is_returned_when_the_solve_oscillates():
    """f swaps between two points: the residual never drops, the first (best) iterate is kept."""
    calls = []

    def f(z):
        calls.append(z.clone())
        return torch.where(z > 0, -2.0 * z, -0.5 * z + 0.1) + 0.0 * z

    z0 = torch.ones(1, 2, dtype=F64)
    sol = dk.solve(f, z0, "fixed_point", tol=1e-12, max_iter=6, on_failure="ignore")
    res = [(f(z) - z).norm().item() / f(z).norm().item() for z in calls[:6]]
    best = min(range(len(res)), key=res.__getitem__)
    torch.testing.assert_close(sol.z, calls[best])
    assert sol.residual.item() == pytest.approx(res[best])


def test_trace_records_every_iteration():
    sol = dk.solve(
        lambda z: 0.5 * z + 1.0, torch.zeros(3, 2, dtype=F64), "fixed_point", tol=1e-6, trace=True
    )
    assert sol.trace.shape == (3, sol.nstep.max().item())
    assert (sol.trace[:, 1:] <= sol.trace[:, :-1]).all()
    assert sol.trace[:, -1].tolist() == pytest.approx(sol.residual.tolist())


def test_nonfinite_values_end_as_nonfinite_with_finite_best():
    def f(z):
        out = 0.5 * z + 1.0
        out = out.clone()
        out[1] = out[1] / (z[1] - 0.75).abs().lt(1e-9).logical_not().to(z.dtype)
        return out

    def g(z):  # sample 1 turns NaN at its third iterate (z = 1.5)
        out = 0.5 * z + 1.0
        bad = (z[:, :1] == 1.5).expand_as(z)
        return torch.where(bad, torch.full_like(z, float("nan")), out)

    sol = dk.solve(g, torch.zeros(2, 3, dtype=F64), "fixed_point", tol=1e-8, on_failure="ignore")
    assert sol.status == dk.Status.NONFINITE
    assert torch.isfinite(sol.z).all()
    assert sol.converged.tolist() == [True, True] or not sol.converged[1]


def test_nan_from_first_evaluation_is_nonfinite_not_a_hang():
    sol = dk.solve(
        lambda z: z * float("nan"), torch.ones(2, 3), "anderson", max_iter=1000, on_failure="ignore"
    )
    assert sol.status == dk.Status.NONFINITE and sol.nfev == 1
    with pytest.raises(dk.SolverError, match="NONFINITE"):
        dk.solve(lambda z: z * float("nan"), torch.ones(2, 3), on_failure="raise")


def test_anderson_singular_history_gives_no_nan():
    """Every residual is the same vector: the Gram matrix is rank one (exactly singular)."""
    direction = torch.ones(1, 4, dtype=F64)
    sol = dk.solve(
        lambda z: z + direction,
        torch.zeros(1, 4, dtype=F64),
        dk.Anderson(m=4, lam=0.0),
        max_iter=10,
        on_failure="ignore",
    )
    assert torch.isfinite(sol.z).all() and torch.isfinite(sol.residual).all()
    assert sol.status in (dk.Status.MAX_ITER, dk.Status.DIVERGED)


def test_anderson_reaches_exact_fixed_point_with_zero_residual():
    sol = dk.solve(lambda z: 0.0 * z + 3.0, torch.zeros(2, 3, dtype=F64), "anderson", tol=1e-12)
    assert sol.status == dk.Status.CONVERGED
    torch.testing.assert_close(sol.z, torch.full((2, 3), 3.0, dtype=F64))


@pytest.mark.parametrize("solver", SOLVER_NAMES)
def test_bfloat16_state_solves_in_float32(solver):
    W = 0.5 * torch.eye(6)
    x = torch.randn(3, 6)
    f = lambda z: torch.tanh(z @ W.to(z.dtype) + x.to(z.dtype))  # noqa: E731
    sol = dk.solve(f, torch.zeros(3, 6, dtype=torch.bfloat16), solver, tol=1e-2, max_iter=50)
    assert sol.z.dtype == torch.bfloat16
    assert torch.isfinite(sol.z.float()).all()
    assert sol.status == dk.Status.CONVERGED


def test_broyden_memory_does_not_grow_with_max_iter():
    solver = dk.Broyden(memory=7)
    z = torch.zeros(2, 5)
    us, vs = solver.init(z, z)[:2]
    assert us.shape == (2, 7, 5) and vs.shape == (2, 7, 5)
    prob = make_linear(dim=5, radius=0.99)
    sol = dk.solve(prob.f, torch.zeros(4, 5, dtype=F64), solver, tol=1e-10, max_iter=200)
    assert sol.status == dk.Status.CONVERGED


def test_broyden_line_search_counts_extra_evaluations():
    prob = make_linear(radius=0.9)
    sol = dk.solve(prob.f, torch.zeros(4, 6, dtype=F64), dk.Broyden(line_search=True), tol=1e-10)
    assert sol.status == dk.Status.CONVERGED
    assert sol.nfev >= sol.nstep.max().item()


def test_newton_krylov_finite_difference_jvp():
    f = lambda z: 0.5 * torch.tanh(z) + 1.0  # noqa: E731
    z0 = torch.zeros(2, 3, dtype=F64)
    sol = dk.solve(f, z0, dk.NewtonKrylov(jvp="finite_difference"), tol=1e-10)
    ref = dk.solve(f, z0, "fixed_point", tol=1e-12, max_iter=200)
    assert sol.status == dk.Status.CONVERGED
    torch.testing.assert_close(sol.z, ref.z, atol=1e-9, rtol=0)


def test_user_solver_plugs_into_the_interface():
    @dataclass(frozen=True)
    class HalfStep(dk.Solver):
        name = "half_step"

        def init(self, z, fz):
            return 0

        def step(self, evaluate, z, fz, memory, active):
            z_new = 0.5 * (z + fz)
            return z_new, evaluate(z_new), memory + 1

    sol = dk.solve(
        lambda z: 0.5 * z + 1.0, torch.zeros(2, 2, dtype=F64), HalfStep(), tol=1e-10, max_iter=200
    )
    assert sol.status == dk.Status.CONVERGED
    torch.testing.assert_close(sol.z, torch.full((2, 2), 2.0, dtype=F64))


def test_solution_repr_is_readable():
    sol = dk.solve(lambda z: 0.5 * z + 1.0, torch.zeros(2, 2), tol=1e-5)
    text = repr(sol)
    assert text.startswith("Solution(status=CONVERGED, converged=2/2") and "nfev=" in text


def test_registry_names_and_options():
    assert set(SOLVERS) == set(SOLVER_NAMES)
    assert make_solver("anderson") == dk.Anderson()
    with pytest.raises(ValueError, match="unknown solver 'andersen'"):
        make_solver("andersen")
    with pytest.raises(TypeError, match="solver must be"):
        make_solver(3)


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda: dk.Anderson(m=0), ValueError, "Anderson.m must be >= 1"),
        (lambda: dk.Anderson(m=2.5), TypeError, "Anderson.m must be an int"),
        (lambda: dk.Anderson(mm=3), TypeError, "mm"),
        (lambda: dk.Anderson(damping=1.5), ValueError, "damping"),
        (lambda: dk.Broyden(line_search="yes"), TypeError, "line_search"),
        (lambda: dk.FixedPoint(damping=0.0), ValueError, "damping"),
        (lambda: dk.NewtonKrylov(jvp="exact"), ValueError, "jvp"),
    ],
)
def test_bad_options_raise_at_once(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_iterate_rejects_non_matrix():
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        iterate(dk.FixedPoint(), lambda z: z, torch.zeros(2, 3, 4))


def test_residual_definition_matches_design():
    z = torch.tensor([[1.0, 1.0]], dtype=F64)
    sol = dk.solve(
        lambda z: 0 * z + torch.tensor([3.0, 4.0], dtype=F64), z, max_iter=1, on_failure="ignore"
    )
    assert sol.abs_residual.item() == pytest.approx(math.hypot(2.0, 3.0))
    assert sol.rel_residual.item() == pytest.approx(math.hypot(2.0, 3.0) / 5.0)
