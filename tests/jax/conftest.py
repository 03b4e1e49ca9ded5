"""JAX test setup: float64 by default (a module sets ``JAX_X64 = False`` to run in float32)."""

from __future__ import annotations

import jax
import numpy as np
import pytest


@pytest.fixture(autouse=True, scope="module")
def _jax_precision(request):
    want = getattr(request.module, "JAX_X64", True)
    old = jax.config.read("jax_enable_x64"), jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_enable_x64", want)
    # Tests are dominated by XLA compile time, not run time: skip the slow optimisation passes.
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_enable_x64", old[0])
    jax.config.update("jax_disable_most_optimizations", old[1])


def tanh_weights(dim=5, in_dim=3, batch=4, scale=0.8, seed=0):
    """Weights of the cell tanh(W z + U x + b) with ‖W‖₂ = scale, as float64 numpy arrays."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((dim, dim))
    W = scale * W / np.linalg.norm(W, 2)
    U = rng.standard_normal((dim, in_dim))
    b = 0.1 * rng.standard_normal(dim)
    x = rng.standard_normal((batch, in_dim))
    return W, U, b, x


@pytest.fixture
def weights():
    return tanh_weights()
