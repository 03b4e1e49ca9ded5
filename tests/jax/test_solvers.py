"""JAX solvers on problems with known answers; statuses, counters, traces and option checks."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deqkit as dk
import deqkit.jax as dkj
from deqkit.jax.solvers import make_solver

SOLVERS = ["fixed_point", "anderson", "broyden", "newton_krylov"]


@pytest.mark.parametrize("solver", SOLVERS)
def test_linear_fixed_point_closed_form(solver):
    rng = np.random.default_rng(1)
    A = rng.standard_normal((6, 6))
    A = 0.7 * A / np.linalg.norm(A, 2)
    c = rng.standard_normal((3, 6))
    want = np.linalg.solve(np.eye(6) - A, c.T).T
    sol = dkj.solve(lambda z: z @ A.T + c, jnp.zeros((3, 6)), solver, tol=1e-10, max_iter=200)
    assert int(sol.status) == dkj.Status.CONVERGED and bool(sol.converged.all())
    np.testing.assert_allclose(sol.z, want, atol=1e-8)
    assert (np.asarray(sol.residual) <= 1e-10).all()
    np.testing.assert_allclose(sol.residual, sol.rel_residual)
    if solver == "fixed_point":  # no line search: one f-evaluation per iteration
        assert int(sol.nfev) == int(sol.nstep.max())


def test_statuses_counters_and_trace():
    f = lambda z: 0.9 * z + 1.0  # noqa: E731
    sol = dkj.solve(
        f, jnp.zeros((2, 3)), "fixed_point", max_iter=3, trace=True, on_failure="ignore"
    )
    assert int(sol.status) == dkj.Status.MAX_ITER
    np.testing.assert_array_equal(sol.nstep, [3, 3])
    assert int(sol.nfev) == 3 and sol.trace.shape == (2, 3)
    assert (np.diff(np.asarray(sol.trace), axis=1) < 0).all()

    grow = dkj.solve(lambda z: 2.0 * z + 1.0, jnp.zeros((1, 2)), "fixed_point", on_failure="ignore")
    assert int(grow.status) == dkj.Status.DIVERGED and int(grow.nstep[0]) < 50

    # One sample turns NaN at once; the other converges. The batch reports the worst.
    mixed = dkj.solve(
        lambda z: jnp.sqrt(z[:, :1] - 1.0) * 0 + 0.5 * z + jnp.array([[1.0], [-3.0]]),
        jnp.array([[2.0], [0.0]]),
        "anderson",
        tol=1e-8,
        on_failure="ignore",
    )
    assert int(mixed.status) == dkj.Status.NONFINITE
    np.testing.assert_array_equal(mixed.converged, [True, False])
    np.testing.assert_allclose(mixed.z[0], [2.0], atol=1e-7)
    assert np.isfinite(np.asarray(mixed.z)).all()  # best finite iterate, never NaN


def test_best_iterate_is_returned():
    # Broyden overshoots on this map; the lowest-residual iterate is what comes back.
    sol = dkj.solve(
        lambda z: jnp.cos(3 * z),
        jnp.zeros((1, 1)),
        "broyden",
        max_iter=4,
        trace=True,
        on_failure="ignore",
    )
    assert float(sol.residual[0]) == pytest.approx(float(np.nanmin(np.asarray(sol.trace))))


def test_failure_policies_eager_and_jitted():
    f = lambda z: 0.99 * z + 1.0  # noqa: E731
    with pytest.raises(dkj.SolverError) as info:
        dkj.solve(f, jnp.zeros((1, 2)), "fixed_point", max_iter=2, on_failure="raise")
    assert isinstance(info.value, dk.SolverError) and info.value.status == dk.Status.MAX_ITER
    with pytest.warns(dk.DEQWarning, match="MAX_ITER"):
        dkj.solve(f, jnp.zeros((1, 2)), "fixed_point", max_iter=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = jax.jit(lambda z0: dkj.solve(f, z0, "fixed_point", max_iter=2).z)
        jax.block_until_ready(run(jnp.zeros((1, 2))))
        jax.effects_barrier()
    assert any(issubclass(w.category, dk.DEQWarning) for w in caught)
    # Under jit "raise" surfaces as jax's runtime error carrying the SolverError message.
    strict = jax.jit(lambda z0: dkj.solve(f, z0, "fixed_point", max_iter=2, on_failure="raise").z)
    with pytest.raises(RuntimeError, match="forward solve ended with MAX_ITER"):
        jax.block_until_ready(strict(jnp.zeros((1, 2))))


def test_options_are_checked_and_torch_options_convert():
    with pytest.raises(ValueError, match="Anderson.m"):
        dkj.Anderson(m=0)
    with pytest.raises(TypeError):
        dkj.Broyden(memroy=3)
    with pytest.raises(TypeError, match="line_search"):
        dkj.Broyden(line_search=1)
    with pytest.raises(ValueError, match="unknown solver"):
        make_solver("newton")
    with pytest.raises(ValueError, match="tol"):
        dkj.solve(lambda z: z, jnp.zeros((1, 1)), tol=-1.0)
    with pytest.raises(ValueError, match="stop_mode"):
        dkj.solve(lambda z: z, jnp.zeros((1, 1)), stop_mode="max")
    with pytest.raises(ValueError, match="same structure"):
        dkj.solve(lambda z: (z, z), jnp.zeros((1, 1)))
    with pytest.raises(ValueError, match="NaN"):
        dkj.solve(lambda z: z, jnp.full((1, 1), jnp.nan))
    assert make_solver(dk.Broyden(memory=7, line_search=True)) == dkj.Broyden(
        memory=7, line_search=True
    )
    assert dkj.Implicit(solver=dk.FixedPoint(damping=0.5)).solver == dkj.FixedPoint(damping=0.5)


def test_stop_scope_batch_iterates_all_samples_together():
    # f couples the samples; per-sample freezing would leave the early ones off their fixed point.
    f = lambda z: 0.5 * z + 0.45 * z.mean(0, keepdims=True) + jnp.array([[0.01], [5.0]])  # noqa: E731
    sol = dkj.solve(f, jnp.zeros((2, 3)), "anderson", tol=1e-9, stop_mode="abs", stop_scope="batch")
    assert int(sol.status) == dkj.Status.CONVERGED and len(set(np.asarray(sol.nstep))) == 1
    true = np.linalg.norm(np.asarray(f(sol.z) - sol.z), axis=1)
    assert (true <= 1e-9).all()
    np.testing.assert_allclose(sol.abs_residual, true, rtol=1e-9, atol=1e-15)
    with pytest.raises(ValueError, match="stop_scope"):
        dkj.solve(f, jnp.zeros((2, 3)), stop_scope="all")


def test_coupled_f_per_sample_status_is_true():
    # The first sample stops early; the coupling then moves its fixed point. The final check
    # evaluates f at the returned z, so the status cannot claim a convergence that is not there.
    f = lambda z: 0.5 * z + 0.45 * z.mean(0, keepdims=True) + jnp.array([[0.01], [5.0]])  # noqa: E731
    sol = dkj.solve(
        f,
        jnp.zeros((2, 3)),
        "fixed_point",
        tol=1e-6,
        stop_mode="abs",
        max_iter=200,
        on_failure="ignore",
    )
    true = np.linalg.norm(np.asarray(f(sol.z) - sol.z), axis=1)
    np.testing.assert_allclose(sol.abs_residual, true, rtol=1e-9, atol=1e-15)
    np.testing.assert_array_equal(sol.converged, true <= 1e-6)
    assert int(sol.status) == (
        dkj.Status.CONVERGED if (true <= 1e-6).all() else dkj.Status.MAX_ITER
    )


def test_mixed_stop_mode_stops_at_a_zero_fixed_point():
    f = lambda z: 0.5 * z  # noqa: E731  z* = 0: ‖f(z) − z‖ / ‖f(z)‖ stays 1 forever
    rel = dkj.solve(f, jnp.ones((2, 3)), "fixed_point", tol=1e-6, on_failure="ignore")
    assert int(rel.status) == dkj.Status.MAX_ITER
    mixed = dkj.solve(f, jnp.ones((2, 3)), "fixed_point", tol=1e-6, stop_mode="mixed")
    assert int(mixed.status) == dkj.Status.CONVERGED
    scale = np.linalg.norm(np.asarray(f(mixed.z)), axis=1)
    np.testing.assert_allclose(mixed.residual, mixed.abs_residual / (1 + scale), rtol=1e-12)


@pytest.mark.parametrize("scope", ["sample", "batch"])
def test_empty_batch_returns_an_empty_solution(scope):
    calls = []
    sol = dkj.solve(lambda z: calls.append(1) or 0.5 * z, jnp.zeros((0, 3)), stop_scope=scope)
    assert sol.z.shape == (0, 3) and sol.converged.shape == (0,) and int(sol.nfev) == 0
    assert int(sol.status) == dkj.Status.CONVERGED


def test_broyden_final_state_approximates_the_adjoint():
    from deqkit.jax.solvers import iterate

    A = 0.5 * jnp.eye(3)
    sol = iterate(
        dkj.Broyden(memory=8),
        lambda z: z @ A.T + 1.0,
        jnp.zeros((2, 3)),
        tol=1e-10,
        keep_state=True,
    )
    g = jnp.ones((2, 3))
    np.testing.assert_allclose(sol.state.adjoint(g), 2 * g, rtol=1e-8)  # u = g / (1 - 0.5)
