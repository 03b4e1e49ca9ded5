"""deq-jax's tests and README through the drop-in ``deqkit.jax.haiku.deq`` (its call unchanged).

Where deq-jax's expected numbers come from its own wiring (the −2/3 gradient to the initial
guess) the exact value is asserted instead; the dropout case is checked against a dense solve of
the same affine map rather than deq-jax's printed numbers, which depend on Haiku's RNG of 2020.
"""

from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
from jax import grad, value_and_grad

from deqkit.jax.haiku import deq

JAX_X64 = False  # deq-jax's tests run in float32


def test_deq_multi_variable():
    def layer(params, rng, x):
        return params["w"] * x + params["b"]

    def toy_model(params, data):
        return jnp.sum(deq(params, None, data, layer, 30))

    params = {"w": -2 * jnp.ones((1, 2, 3)), "b": jnp.ones((1, 2, 3))}
    data = jnp.ones((1, 2, 3))
    value, grad_params = value_and_grad(toy_model)(params, data)
    grad_data = grad(toy_model, argnums=1)(params, data)
    np.testing.assert_almost_equal(2, value, decimal=4)
    # z* = 1/3 does not depend on the initial guess: exactly zero (deq-jax asserts -2/3).
    np.testing.assert_array_equal(grad_data, np.zeros((1, 2, 3)))
    # dz*/dw = z*/(1 - w) = 1/9, dz*/db = 1/(1 - w) = 1/3.
    np.testing.assert_allclose(grad_params["w"], np.full((1, 2, 3), 1 / 9), rtol=1e-4)
    np.testing.assert_allclose(grad_params["b"], np.full((1, 2, 3), 1 / 3), rtol=1e-4)


def test_deq_haiku():
    def forward_fn(x):
        linear_1 = hk.Linear(
            3, name="l1", w_init=hk.initializers.Constant(1), b_init=hk.initializers.Constant(1)
        )
        transformed_linear = hk.transform(linear_1)
        inner_params = hk.lift(transformed_linear.init)(hk.next_rng_key(), x)
        return deq(inner_params, hk.next_rng_key(), x, transformed_linear.apply, 10)

    forward = hk.transform(forward_fn)
    x = jnp.ones((1, 2, 3))
    rng = jax.random.PRNGKey(42)
    params = forward.init(rng, x)

    @jax.jit
    def loss_fn(params, rng, x):
        return jnp.sum(forward.apply(params, rng, x))

    value, (params_grad, x_grad) = jax.value_and_grad(loss_fn, (0, 2))(params, rng, 2 * x)
    np.testing.assert_almost_equal(-3.0, value, decimal=5)
    np.testing.assert_allclose(params_grad["lifted/l1"]["w"], np.full((3, 3), 0.5), rtol=1e-5)
    np.testing.assert_array_equal(x_grad, np.zeros_like(x))  # x is only the initial guess


def test_deq_with_hk_using_rng():
    # deq-jax's dropout cell: one mask per call (the same key at every iteration), so fun is
    # affine in z, z ↦ A z + c. The reference solves (I − A) z = c densely and differentiates
    # that by plain autodiff.
    def dropout_linear(x):
        const = hk.initializers.Constant
        h = hk.Linear(3, w_init=const(0.3), b_init=const(1))(x)
        return hk.dropout(hk.next_rng_key(), 0.5, h)

    inner = hk.transform(dropout_linear)

    def build(dense):
        def forward_fn(x):
            inner_params = hk.lift(inner.init, name="lifted")(hk.next_rng_key(), x)
            key = hk.next_rng_key()
            if dense:

                def fun(z):
                    return inner.apply(inner_params, key, z.reshape(x.shape)).reshape(-1)

                zeros = jnp.zeros(x.size)
                A, c = jax.jacfwd(fun)(zeros), fun(zeros)
                z = jnp.linalg.solve(jnp.eye(x.size) - A, c).reshape(x.shape)
            else:
                z = deq(inner_params, key, x, inner.apply, 30)
            return hk.Linear(3, name="l2", with_bias=False)(z)

        return hk.transform(forward_fn)

    x, rng = jnp.ones((1, 2, 3)), jax.random.PRNGKey(42)
    params = build(False).init(rng, x)

    def loss(dense):
        return jax.jit(jax.value_and_grad(lambda p: jnp.sum(build(dense).apply(p, rng, 2 * x))))

    (value, grads), (want_value, want_grads) = loss(False)(params), loss(True)(params)
    np.testing.assert_allclose(value, want_value, rtol=1e-5)
    for path in (("lifted/linear", "w"), ("lifted/linear", "b"), ("l2", "w")):
        g, w = grads[path[0]][path[1]], want_grads[path[0]][path[1]]
        assert np.abs(w).max() > 0
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)


def test_readme_example_runs():
    def build_forward(output_size, max_iter):
        def forward_fn(x, is_training):
            network = hk.Linear(output_size, name="l1")
            transformed_net = hk.transform(network)
            inner_params = hk.lift(transformed_net.init)(hk.next_rng_key(), x)
            z = deq(inner_params, hk.next_rng_key(), x, transformed_net.apply, max_iter)
            return hk.Linear(output_size)(z)

        return forward_fn

    x = jnp.ones((1, 2, 3))
    rng = jax.random.PRNGKey(42)
    forward = hk.transform(build_forward(3, 10))
    params = forward.init(rng, x, True)

    @jax.jit
    def loss_fn(params, rng, x):
        return jnp.sum(forward.apply(params, rng, x, True))

    value, grads = value_and_grad(loss_fn)(params, rng, x)
    assert np.isfinite(value) and all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
