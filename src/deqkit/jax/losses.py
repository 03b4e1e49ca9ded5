"""The training terms of the torch toolkit, for JAX: Jacobian penalty, Skip-DEQ loss,
fixed-point correction. Pure functions of arrays (and a PRNG key where probes are drawn).

* :func:`jacobian_penalty` -- Hutchinson estimate of ‖∂f/∂z‖²_F / D at the fixed point (Bai,
  Koltun, Kolter, "Stabilizing Equilibrium Models by Jacobian Regularization", ICML 2021), the
  twin of :func:`deqkit.jacobian_penalty`.
* :func:`skip_loss` -- the Skip-DEQ initialiser's loss, mean (z0 − z*)² with z* held constant
  (Pal, Edelman, Rackauckas, "Mixing Implicit and Explicit Deep Learning with Skip DEQs", 2022).
* :func:`fixed_point_correction` -- Σᵢ γ^(k−1−i) · criterion(statesᵢ, target) over k states
  along the solver path (Bai, Geng, Kolter, Koltun, "Deep Equilibrium Optical Flow
  Estimation", CVPR 2022).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from .._validate import check_choice, check_float, check_int
from ._state import flatten

__all__ = ["fixed_point_correction", "jacobian_penalty", "skip_loss"]


def jacobian_penalty(
    f: Callable[[Any], Any], z: Any, key: jax.Array, *, vecs: int = 1, reduction: str = "mean"
) -> jax.Array:
    """Hutchinson estimate of ‖∂f/∂z‖²_F at ``z``, divided by the state size D.

    For v ~ N(0, I), E‖vᵀJ‖² = ‖J‖²_F; the estimate averages ``vecs`` draws per sample, each a
    vector–Jacobian product. Differentiable with respect to everything f closes over, never
    ``z`` (held constant, as in torch).

    Args:
        f: the map, e.g. ``lambda z: cell(params, z, x)``; array or pytree states.
        z: the point, usually the fixed point.
        key: PRNG key for the probe vectors.
        vecs: probe vectors per sample.
        reduction: "mean" (a scalar: batch mean) or "none" (one value per sample).

    >>> import jax, jax.numpy as jnp
    >>> import deqkit.jax as dkj
    >>> A = jnp.array([[0.6, 0.0], [0.0, 0.8]])
    >>> est = dkj.jacobian_penalty(lambda z: z @ A.T, jnp.zeros((20000, 2)), jax.random.PRNGKey(0))
    >>> round(float(est), 1)  # (0.36 + 0.64) / 2
    0.5
    """
    check_int("vecs", vecs, minimum=1)
    check_choice("reduction", reduction, ("mean", "none"))
    flat, spec = flatten(z, "z")
    flat = jax.lax.stop_gradient(flat)
    batch, width = flat.shape
    if batch == 0:  # no samples: a zero term, not the NaN of a mean over nothing
        return jnp.zeros((), flat.dtype) if reduction == "mean" else jnp.zeros((0,), flat.dtype)
    _, vjp = jax.vjp(lambda w: spec.flatten_like(f(spec.unflatten(w)), "f(z)"), flat)
    probes = jax.random.normal(key, (vecs, batch, width), flat.dtype)
    total = jnp.zeros((batch,), flat.dtype)
    for i in range(vecs):
        total = total + jnp.sum(vjp(probes[i])[0] ** 2, axis=1)
    per_sample = total / (vecs * width)
    return jnp.mean(per_sample) if reduction == "mean" else per_sample


def skip_loss(z0: Any, z_star: Any) -> jax.Array:
    """Skip-DEQ loss: mean over batch and elements of (z0 − z*)², with z* held constant.

    >>> import jax.numpy as jnp
    >>> float(skip_loss(jnp.zeros((2, 2)), jnp.ones((2, 2))))
    1.0
    """
    a, a_def = jax.tree_util.tree_flatten(z0)
    b, b_def = jax.tree_util.tree_flatten(z_star)
    if a_def != b_def:  # type: ignore[operator]  # PyTreeDef compares, its stub does not say so
        raise ValueError(f"z0 and z* differ in structure: {a_def} vs {b_def}")
    size = sum(leaf.size for leaf in a)
    total = jnp.zeros(())
    for x, y in zip(a, b, strict=True):
        total = total + jnp.sum((x - jax.lax.stop_gradient(y)) ** 2)
    return total / max(size, 1)  # no elements: a zero term, not the NaN of a mean over nothing


def fixed_point_correction(
    criterion: Callable[[Any, Any], jax.Array],
    states: Sequence[Any],
    target: Any,
    gamma: float = 0.8,
) -> jax.Array:
    """Σᵢ γ^(k−1−i) · criterion(states[i], target) over the k states (``sol.outputs.states``).

    >>> import jax.numpy as jnp
    >>> mse = lambda s, t: jnp.mean((s - t) ** 2)
    >>> float(fixed_point_correction(mse, [jnp.ones(1), 3 * jnp.ones(1)], 3 * jnp.ones(1), 0.5))
    2.0
    """
    if not callable(criterion):
        raise TypeError(f"criterion must be callable, got {type(criterion).__name__}")
    check_float("gamma", gamma, minimum=0.0, maximum=1.0, strict_min=True)
    if not isinstance(states, (list, tuple)) or not states:
        raise ValueError(
            "states must be a non-empty list of states (sol.outputs.states from "
            f"DEQ(..., n_states=k)), got {type(states).__name__}"
        )
    k = len(states)
    total = criterion(states[0], target) * gamma ** (k - 1)
    for i in range(1, k):
        total = total + criterion(states[i], target) * gamma ** (k - 1 - i)
    return total
