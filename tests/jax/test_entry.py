"""The JAX entry points at their edges: empty batches and has_aux (twins of tests/test_entry.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deqkit.jax as dkj


def _never(z):
    raise AssertionError("f must not be called for an empty batch")


def test_empty_batch_solve_and_fixed_point_return_empty_solutions():
    # Before: ZeroDivisionError from the state packing (reshape to (0, -1)).
    sol = dkj.solve(_never, jnp.zeros((0, 3)), trace=True)
    assert sol.z.shape == (0, 3) and sol.status == dkj.Status.CONVERGED and int(sol.nfev) == 0
    assert sol.converged.shape == sol.nstep.shape == sol.residual.shape == (0,)
    assert sol.trace.shape == (0, 50)
    z, sol = dkj.fixed_point(_never, jnp.zeros((0, 3)))
    assert z.shape == (0, 3) and sol.status.name == "CONVERGED"

    def loss(w, x):
        z, sol = dkj.fixed_point(lambda z: jnp.tanh(z @ w.T + x), jnp.zeros((0, 3)))
        return jnp.sum(z), sol

    w, x = 0.5 * jnp.eye(3), jnp.ones((0, 3))
    (value, sol), (gw, gx) = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(w, x)
    assert float(value) == 0.0 and sol.status == dkj.Status.CONVERGED
    assert gx.shape == (0, 3) and not np.asarray(gw).any()


def test_empty_batch_pytree_state():
    state = {"a": jnp.zeros((0, 3)), "b": jnp.zeros((0, 2, 2))}
    sol = dkj.solve(_never, state)
    assert sol.z["a"].shape == (0, 3) and sol.z["b"].shape == (0, 2, 2)
    assert dkj.solve(_never, state, has_aux=True).aux is None


def test_has_aux_solve_returns_aux_at_the_returned_z():
    def f(z):
        return 0.5 * z + 1.0, {"norm": jnp.linalg.norm(z, axis=1)}

    sol = dkj.solve(f, jnp.zeros((2, 3)), "fixed_point", tol=1e-10, max_iter=100, has_aux=True)
    np.testing.assert_allclose(sol.aux["norm"], np.linalg.norm(sol.z, axis=1), rtol=1e-12)
    assert dkj.solve(lambda z: 0.5 * z + 1.0, jnp.ones((1, 1)), "fixed_point").aux is None
    with pytest.raises(TypeError, match=r"has_aux=True f must return a \(state, aux\) pair"):
        dkj.solve(lambda z: 0.5 * z, jnp.ones((1, 1)), has_aux=True)
    with pytest.raises(TypeError, match="has_aux must be a bool"):
        dkj.solve(lambda z: 0.5 * z, jnp.ones((1, 1)), has_aux="yes")


@pytest.mark.parametrize("backward", ["implicit", "unrolled", "phantom"])
def test_has_aux_gradients_through_z_star_and_directly(backward):
    # z* = x / (1 − a) per element; aux = a · Σz*  ⇒  d aux/da = Σz* + a Σx / (1 − a)².
    x = jnp.array([[1.0, 2.0]])

    def aux_of(a):
        def f(z):
            return a * z + x, a * z.sum()

        bwd = dkj.Phantom(steps=60) if backward == "phantom" else backward
        z, sol = dkj.fixed_point(f, jnp.zeros((1, 2)), "fixed_point", bwd, tol=1e-13,
                                 max_iter=200, has_aux=True)  # fmt: skip
        return sol.aux

    value, grad = jax.jit(jax.value_and_grad(aux_of))(0.5)
    z_star = 3.0 / 0.5
    np.testing.assert_allclose(value, 0.5 * z_star, rtol=1e-10)
    np.testing.assert_allclose(grad, z_star + 0.5 * 3.0 / 0.25, rtol=1e-9)
