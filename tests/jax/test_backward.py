"""Gradients through the JAX fixed point: check_grads in float64, phantom/one-step definitions,
exactly zero gradient to z0 for every backward."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import deqkit.jax as dkj

# Fixed-point iteration where the solver is not the point: it compiles several times faster.
TIGHT = {"tol": 1e-12, "max_iter": 80, "on_failure": "raise"}
CHEAP = {"solver": "fixed_point", "backward": dkj.Implicit("fixed_point", tol=1e-12, max_iter=80)}


def cell(params, x):
    W, U, b = params
    return lambda z: jnp.tanh(z @ W.T + x @ U.T + b)


def as_jax(weights):
    W, U, b, x = map(jnp.asarray, weights)
    return (W, U, b), x


@pytest.mark.parametrize(
    "solver_backward",
    [("anderson", dkj.Implicit(tol=1e-12, max_iter=40)), ("fixed_point", dkj.Unrolled())],
    ids=["implicit", "unrolled"],
)
def test_check_grads_float64(solver_backward, weights):
    solver, backward = solver_backward
    params, x = as_jax(weights)

    @jax.jit
    def loss(params, x):
        z, _ = dkj.fixed_point(cell(params, x), jnp.zeros((4, 5)), solver, backward, **TIGHT)
        return jnp.sum(jnp.sin(z))

    check_grads(loss, (params, x), order=1, modes=["rev"], eps=1e-6, atol=1e-7, rtol=1e-6)


def test_phantom_and_one_step_match_their_definitions(weights):
    params, x = as_jax(weights)
    z_star = dkj.solve(cell(params, x), jnp.zeros((4, 5)), "fixed_point", tol=1e-12, max_iter=80).z

    def by_hand(params, steps, damping):
        z = z_star
        for _ in range(steps):
            z = (1 - damping) * z + damping * cell(params, x)(z)
        return jnp.sum(z**2)

    def deq(params, backward):
        z0 = jnp.zeros((4, 5))
        z, _ = dkj.fixed_point(cell(params, x), z0, "fixed_point", backward, **TIGHT)
        return jnp.sum(z**2)

    deq = jax.jit(jax.grad(deq), static_argnums=1)
    by_hand = jax.jit(jax.grad(by_hand), static_argnums=(1, 2))
    for backward, steps, damping in [
        (dkj.Phantom(steps=3, damping=0.5), 3, 0.5),
        (dkj.OneStep(), 1, 1.0),
    ]:
        got = deq(params, backward)
        want = by_hand(params, steps, damping)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backward", ["implicit", "phantom", "one_step", "unrolled"])
def test_zero_gradient_to_z0(backward, weights):
    params, x = as_jax(weights)

    def loss(z0):
        z, _ = dkj.fixed_point(cell(params, x), z0, "fixed_point", backward, tol=1e-8)
        return jnp.sum(z**2)

    g = jax.jit(jax.grad(loss))(jnp.full((4, 5), 0.3))
    np.testing.assert_array_equal(g, np.zeros((4, 5)))


def test_pytree_state_gradients_match_flat(weights):
    params, x = as_jax(weights)
    (W, U, b) = params

    def split(W, U, b):
        # The same cell written on a dict state {"a": first 2 features, "b": last 3 as (B, 3, 1)}.
        def f(state):
            z = jnp.concatenate([state["a"], state["b"][..., 0]], axis=1)
            out = cell((W, U, b), x)(z)
            return {"a": out[:, :2], "b": out[:, 2:, None]}

        z0 = {"a": jnp.zeros((4, 2)), "b": jnp.zeros((4, 3, 1))}
        z, sol = dkj.fixed_point(f, z0, **CHEAP, **TIGHT)
        return jnp.sum(z["a"] ** 2) + jnp.sum(z["b"] ** 2)

    def flat(W, U, b):
        z, _ = dkj.fixed_point(cell((W, U, b), x), jnp.zeros((4, 5)), **CHEAP, **TIGHT)
        return jnp.sum(z**2)

    got = jax.jit(jax.grad(split, argnums=(0, 1, 2)))(W, U, b)
    want = jax.jit(jax.grad(flat, argnums=(0, 1, 2)))(W, U, b)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12)


def test_adjoint_failure_policy_applies(weights):
    params, x = as_jax(weights)

    def loss(params):
        z, _ = dkj.fixed_point(
            cell(params, x),
            jnp.zeros((4, 5)),
            "fixed_point",
            backward=dkj.Implicit(solver="fixed_point", tol=1e-14, max_iter=2),
            tol=1e-10,
            on_failure="raise",
        )
        return jnp.sum(z)

    with pytest.raises(dkj.SolverError, match="adjoint"):
        jax.grad(loss)(params)
