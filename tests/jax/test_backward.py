"""Gradients through the JAX fixed point: check_grads in float64, phantom/one-step definitions,
exactly zero gradient to z0 for every backward, higher and forward-mode derivatives of the
implicit backward against closed forms and a converged unrolled reference."""

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

    # The adjoint solve is part of JAX's derivative program (a custom_linear_solve), so even an
    # eager jax.grad reports from the host, as under jit: the SolverError's message arrives in a
    # JaxRuntimeError.
    with pytest.raises(jax.errors.JaxRuntimeError, match="adjoint"):
        jax.grad(loss)(params)


def scalar_deq(a, x=2.0):
    """z* of z = a z + x (z* = x / (1 − a)), summed, with the implicit backward."""
    z, _ = dkj.fixed_point(lambda z: a * z + x, jnp.zeros((1, 1)), **CHEAP, **TIGHT)
    return z.sum()


def test_second_derivatives_of_the_implicit_backward_are_exact():
    # z* = 2 / (1 − a): dz*/da = 2/(1 − a)² = 8, d²z*/da² = 4/(1 − a)³ = 32 at a = 1/2. z* used
    # to enter the backward as a stop_gradient copy, so forward-over-reverse lost the term
    # through J(z*) and jax.hessian gave 16; grad of grad failed inside the while_loop.
    a = jnp.asarray(0.5)
    derivatives = {
        "grad": (jax.grad(scalar_deq), 8.0),
        "jvp (forward mode)": (lambda a: jax.jvp(scalar_deq, (a,), (1.0,))[1], 8.0),
        "hessian (forward over reverse)": (jax.hessian(scalar_deq), 32.0),
        "grad of grad (reverse over reverse)": (jax.grad(jax.grad(scalar_deq)), 32.0),
        "jacfwd of jacfwd (forward over forward)": (jax.jacfwd(jax.jacfwd(scalar_deq)), 32.0),
    }
    for name, (fn, want) in derivatives.items():
        np.testing.assert_allclose(jax.jit(fn)(a), want, rtol=1e-10, err_msg=name)


def test_mixed_second_derivative_with_another_path_to_the_input():
    # The torch case in JAX: L = z* + a² x; ∂²L/∂a∂x = 1/(1 − a)² + 2a = 5 at a = 1/2.
    def loss(a, x):
        return scalar_deq(a, x) + a**2 * x

    mixed = jax.jit(jax.grad(jax.grad(loss, argnums=1), argnums=0))(0.5, 2.0)
    np.testing.assert_allclose(mixed, 5.0, rtol=1e-10)


def test_vector_hessian_matches_a_converged_unroll(weights):
    # A nonlinear cell on a small batch: Hessian-vector products of Σ sin(z*) in x, forward over
    # reverse and reverse over reverse, against backprop through 120 plain iterations (converged
    # to round-off at ‖W‖ = 0.8), which needs no implicit rule at all.
    params, x = as_jax(weights)
    x, v = x[:2], jnp.asarray(np.random.default_rng(1).standard_normal((2, 3)))

    def loss(x):
        z, _ = dkj.fixed_point(cell(params, x), jnp.zeros((2, 5)), **CHEAP, **TIGHT)
        return jnp.sum(jnp.sin(z))

    def unrolled(x):
        z = jax.lax.fori_loop(0, 120, lambda _, z: cell(params, x)(z), jnp.zeros((2, 5)))
        return jnp.sum(jnp.sin(z))

    def fwd_rev(fn):
        return jax.jvp(jax.grad(fn), (x,), (v,))[1]

    def rev_rev(fn):
        return jax.grad(lambda x: jnp.vdot(jax.grad(fn)(x), v))(x)

    want = jax.jit(lambda: fwd_rev(unrolled))()
    assert np.abs(want).max() > 0.1  # the reference is not trivially zero
    np.testing.assert_allclose(jax.jit(lambda: rev_rev(unrolled))(), want, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(jax.jit(lambda: fwd_rev(loss))(), want, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(jax.jit(lambda: rev_rev(loss))(), want, rtol=1e-9, atol=1e-11)


def test_forward_mode_check_grads_float64(weights):
    # Forward mode (jvp) is defined for the implicit backward: check_grads against finite
    # differences (second orders are checked against closed forms above).
    params, x = as_jax(weights)

    @jax.jit
    def loss(x):
        z0 = jnp.zeros((4, 5))
        z, _ = dkj.fixed_point(cell(params, x), z0, **CHEAP, **TIGHT)
        return jnp.sum(jnp.sin(z))

    check_grads(loss, (x,), order=1, modes=["fwd"], eps=1e-6, atol=1e-7, rtol=1e-6)


def test_per_example_derivatives_under_vmap():
    # The rule under jax.vmap (a batch of problems, each with its own a): dz*/da = 2/(1 − a)²
    # and d²z*/da² = 4/(1 − a)³ per problem.
    a = jnp.array([0.1, 0.5, 0.7])
    first = jax.jit(jax.vmap(jax.grad(scalar_deq)))(a)
    second = jax.jit(jax.vmap(jax.hessian(scalar_deq)))(a)
    np.testing.assert_allclose(first, 2 / (1 - a) ** 2, rtol=1e-10)
    np.testing.assert_allclose(second, 4 / (1 - a) ** 3, rtol=1e-9)
