"""A drop-in for deq-jax's Haiku entry point, ``deq(params, rng, z, fun, max_iter, *args)``.

deq-jax (github.com/akbir/deq-jax) applies ``fun(params, rng, z, *args)`` -- typically the
``apply`` of an inner ``hk.transform`` whose parameters were lifted into the outer module with
``hk.lift`` -- in its equilibrium limit with Broyden's method. :func:`deq` keeps that call and
runs it over :func:`deqkit.jax.fixed_point`, so a deq-jax model changes one import. Haiku itself
is not imported here: ``fun`` is any function of that signature.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax

from ..core import FailurePolicy
from ._state import flatten
from .backward import Implicit
from .deq import fixed_point

__all__ = ["deq"]


def deq(
    params: Any,
    rng: Any,
    z: Any,
    fun: Callable[..., Any],
    max_iter: int,
    *args: Any,
    solver: Any = "broyden",
    backward: Any = None,
    tol: float | None = None,
    on_failure: FailurePolicy = "warn",
    return_solution: bool = False,
) -> Any:
    """deq-jax's ``deq``: the equilibrium z* = fun(params, rng, z*, *args), from the guess z.

    The defaults follow deq-jax: Broyden's method with ``max_iter`` iterations on the whole
    array as one system (``stop_scope="batch"``, so a ``fun`` that mixes samples stays exact),
    stopping when ‖fun(z) − z‖ over the whole array is at most 1e-6·√(z.size)
    (``stop_mode="abs"``), deq-jax's rule; the adjoint is solved by Broyden with the same
    budget, each sample to 1e-6·√D (D its size), which bounds the whole array's adjoint
    residual by the same 1e-6·√(z.size) (deq-jax asks 2e-10·√(z.size), out of float32's
    reach, and ignores the failure). Gradients reach ``params``
    and ``args`` by the implicit function theorem, as in deq-jax.

    One difference: the gradient with respect to the initial guess ``z`` is exactly zero,
    because z* does not depend on where the solve starts. deq-jax's own test expects −2/3 for
    z = −2z + 1 from ones: its forward pass hands the cotangent straight back to the guess, and
    its backward re-applies ``fun`` to z*, so the guess receives wᵀu = −2 · 1/3 -- an artefact
    of that wiring, not a derivative of z*.

    Args:
        params: the parameters ``fun`` takes first (e.g. lifted Haiku parameters).
        rng: the PRNG key (or None) ``fun`` takes second; the same key at every iteration, so
            dropout inside ``fun`` draws one mask per call of ``deq``.
        z: the initial guess; dim 0 is the batch.
        fun: ``fun(params, rng, z, *args)``, returning an array of z's shape and dtype.
        max_iter: iteration budget of the forward and of the adjoint solve.
        args: further arguments of ``fun`` (inputs, masks); gradients reach them.
        solver, backward: as in :func:`~deqkit.jax.fixed_point` (backward None: the implicit
            adjoint described above).
        tol: absolute tolerance of the forward solve on the whole array (None: 1e-6·√(z.size));
            the default adjoint's per-sample tolerance is this divided by √B.
        on_failure: "warn", "raise" or "ignore" when a solve ends unconverged (deq-jax
            ignores it silently).
        return_solution: also return the :class:`~deqkit.jax.Solution`.

    Returns:
        z* (and the Solution when ``return_solution``).

    >>> import jax, jax.numpy as jnp
    >>> def layer(params, rng, z):
    ...     return params["w"] * z + params["b"]
    >>> params = {"w": -2.0 * jnp.ones((1, 2, 3)), "b": jnp.ones((1, 2, 3))}
    >>> loss = lambda params, z: jnp.sum(deq(params, None, z, layer, 30))
    >>> value, (g_params, g_z) = jax.value_and_grad(loss, (0, 1))(params, jnp.ones((1, 2, 3)))
    >>> round(float(value), 4), round(float(g_params["b"][0, 0, 0]), 4), float(abs(g_z).max())
    (2.0, 0.3333, 0.0)
    """
    batch, width = flatten(z)[0].shape
    if tol is None:
        tol = 1e-6 * math.sqrt(max(batch * width, 1))
    if backward is None:
        adjoint_tol = tol / math.sqrt(max(batch, 1))
        backward = Implicit(solver, tol=adjoint_tol, max_iter=max_iter, stop_mode="abs")

    def f(state):
        return fun(params, rng, state, *args)

    z_star, sol = fixed_point(
        f,
        jax.lax.stop_gradient(z),
        solver,
        backward,
        tol=tol,
        max_iter=max_iter,
        stop_mode="abs",
        stop_scope="batch",
        on_failure=on_failure,
    )
    return (z_star, sol) if return_solution else z_star
