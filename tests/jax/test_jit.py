"""jit and vmap: one trace per shape, and vmap gives what per-sample solves give."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import deqkit.jax as dkj


def test_jitted_call_does_not_retrace_or_recompile(weights):
    W, U, b, x = map(jnp.asarray, weights)
    traces = []

    @jax.jit
    def loss_and_grad(W, x):
        traces.append(1)  # runs once per trace, never on a cached call

        def loss(W):
            z0 = jnp.zeros((x.shape[0], 5))
            cell = lambda z: jnp.tanh(z @ W.T + x @ U.T + b)  # noqa: E731
            z, sol = dkj.fixed_point(cell, z0, "fixed_point", dkj.Implicit("fixed_point"))
            return jnp.sum(z**2), sol.nstep

        return jax.value_and_grad(loss, has_aux=True)(W)

    first = loss_and_grad(W, x)
    second = loss_and_grad(0.9 * W, x + 1.0)
    assert len(traces) == 1
    assert loss_and_grad._cache_size() == 1
    assert not np.allclose(first[0][0], second[0][0])
    loss_and_grad(W[:, :], x[:2])  # a new batch size is a new shape: one more trace
    assert len(traces) == 2


def test_vmap_matches_batched_solve_per_sample(weights):
    W, U, b, x = map(jnp.asarray, weights)

    def loss(x):  # x: (B, 3); under vmap a single sample with its batch dimension of 1
        z0 = jnp.zeros((x.shape[0], 5))
        cell = lambda z: jnp.tanh(z @ W.T + x @ U.T + b)  # noqa: E731
        z, sol = dkj.fixed_point(cell, z0, tol=1e-10, backward=dkj.Implicit(tol=1e-12))
        return jnp.sum(z**2), (sol.z, sol.nstep, sol.status)

    step = jax.value_and_grad(loss, has_aux=True)
    (_, (z_v, nstep_v, status_v)), grad_v = jax.jit(jax.vmap(step))(x[:, None, :])
    (_, (z_b, nstep_b, status_b)), grad_b = jax.jit(step)(x)
    # Per-sample stopping makes a batched solve equal to independent ones, sample by sample.
    np.testing.assert_allclose(z_v[:, 0], z_b, atol=1e-12)
    np.testing.assert_array_equal(nstep_v[:, 0], nstep_b)
    assert (np.asarray(status_v) == 0).all() and int(status_b) == 0
    assert len(set(np.asarray(nstep_b).tolist())) > 1  # the samples really stopped apart
    np.testing.assert_allclose(grad_v[:, 0], grad_b, atol=1e-10)


def test_eager_solve_reuses_its_compiled_program_and_lifts_weights():
    from deqkit.jax.solvers._program import cached_jit

    W = jnp.asarray(np.random.default_rng(0).standard_normal((4, 4)) * 0.1)
    cached_jit.cache_clear()
    for scale in (1.0, 0.5, 0.25):  # new closures, new weights: one compiled solve
        sol = dkj.solve(lambda z, w=scale * W: jnp.tanh(z @ w.T + 1.0), jnp.zeros((2, 4)))
        assert int(sol.status) == dkj.Status.CONVERGED
    info = cached_jit.cache_info()
    assert info.misses == 1 and info.hits == 2
    # The concrete weights travel as arguments of the compiled solve, not as its constants.
    from deqkit.jax.deq import _prepare

    *_, (program, consts) = _prepare(lambda z: jnp.tanh(z @ W.T), jnp.zeros((2, 4)))
    assert any(c.shape == (4, 4) for c in consts) and "4,4" in str(program.jaxpr.constvars[0].aval)


def test_failure_callback_runs_only_when_a_solve_fails(monkeypatch):
    from deqkit.jax import _failure

    calls = []
    monkeypatch.setattr(_failure, "_host_report", lambda *a: calls.append(a))
    run = jax.jit(lambda z0, a: dkj.solve(lambda z: a * z + 1.0, z0, "fixed_point").z)
    jax.block_until_ready(run(jnp.zeros((1, 2)), 0.5))  # converges: no host call
    jax.effects_barrier()
    assert calls == []
    jax.block_until_ready(run(jnp.zeros((1, 2)), 0.999))  # MAX_ITER: the host reports
    jax.effects_barrier()
    assert len(calls) == 1
