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
