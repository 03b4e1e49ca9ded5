"""deq-jax's analytic checks, ported; deq-jax passes a non-zero gradient to z0, deqkit none."""

from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import deqkit.jax as dkj


def test_scalar_map_broyden_and_zero_gradient_to_z0():
    # z = w z + b with w = -2, b = 1: plain iteration diverges, Broyden finds z* = 1/3.
    def loss(params, z0):
        z, sol = dkj.fixed_point(
            lambda z: params["w"] * z + params["b"],
            z0,
            solver="broyden",
            backward=dkj.Implicit(solver="broyden", tol=1e-10),
            tol=1e-10,
            max_iter=30,
        )
        return jnp.sum(z), sol

    params = {"w": -2.0 * jnp.ones((1, 2, 3)), "b": jnp.ones((1, 2, 3))}
    z0 = jnp.ones((1, 2, 3))
    (value, sol), (g_params, g_z0) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        params, z0
    )
    assert int(sol.status) == dkj.Status.CONVERGED
    np.testing.assert_allclose(value, 2.0, atol=1e-9)
    np.testing.assert_allclose(sol.z, np.full((1, 2, 3), 1 / 3), atol=1e-10)
    # dz*/dw = z*/(1 - w) = 1/9, dz*/db = 1/(1 - w) = 1/3, and z0 does not matter at all.
    np.testing.assert_allclose(g_params["w"], np.full((1, 2, 3), 1 / 9), atol=1e-9)
    np.testing.assert_allclose(g_params["b"], np.full((1, 2, 3), 1 / 3), atol=1e-9)
    np.testing.assert_array_equal(g_z0, np.zeros((1, 2, 3)))


def test_haiku_lifted_linear_layer():
    # deq-jax's Haiku check: all-ones W and b, z0 = 2·ones, z* = W z* + b = -1/2 per entry.
    def forward(x):
        layer = hk.transform(
            lambda z: hk.Linear(
                3, name="l1", w_init=hk.initializers.Constant(1), b_init=hk.initializers.Constant(1)
            )(z)
        )
        inner = hk.lift(layer.init, name="lifted")(hk.next_rng_key(), x)
        z, _ = dkj.fixed_point(
            lambda z: layer.apply(inner, None, z),
            x,
            solver="broyden",
            backward=dkj.Implicit(solver="broyden", tol=1e-10),
            tol=1e-10,
            max_iter=30,
        )
        return z

    model = hk.transform(forward)
    x = 2.0 * jnp.ones((1, 2, 3))
    params = model.init(jax.random.PRNGKey(42), x)

    @jax.jit
    def loss(params, x):
        return jnp.sum(model.apply(params, jax.random.PRNGKey(0), x))

    value, (g_params, g_x) = jax.value_and_grad(loss, argnums=(0, 1))(params, x)
    np.testing.assert_allclose(value, -3.0, atol=1e-8)
    w_grad = g_params["lifted/l1"]["w"]
    np.testing.assert_allclose(w_grad, 0.5 * np.ones((3, 3)), atol=1e-8)
    # The adjoint u = 1 + Wᵀu is -1/2 per entry; dL/db sums it over the two rows.
    np.testing.assert_allclose(g_params["lifted/l1"]["b"], -np.ones(3), atol=1e-8)
    np.testing.assert_array_equal(g_x, np.zeros_like(x))


def test_haiku_cell_with_rng_inside_jit_and_grad():
    # deq-jax's dropout case: the cell draws from an RNG key that f closes over; the key (an
    # integer tracer) must reach the backward pass, which JAX traces apart from the forward.
    def forward(x):
        layer = hk.transform(
            lambda z: hk.dropout(hk.next_rng_key(), 0.5, jnp.tanh(0.3 * hk.Linear(3)(z) + x))
        )
        inner = hk.lift(layer.init, name="lifted")(hk.next_rng_key(), x)
        key = hk.next_rng_key()
        z, sol = dkj.fixed_point(lambda z: layer.apply(inner, key, z), jnp.zeros_like(x), tol=1e-8)
        return z, sol

    model = hk.transform(forward)
    x = jnp.ones((2, 3))
    params = model.init(jax.random.PRNGKey(0), x)

    def loss(params, key):
        z, sol = model.apply(params, key, x)
        return jnp.sum(z**2), sol.status

    key = jax.random.PRNGKey(1)
    (value, status), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params, key)
    assert int(status) == dkj.Status.CONVERGED and np.isfinite(value)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    assert np.abs(grads["lifted/linear"]["w"]).sum() > 0
