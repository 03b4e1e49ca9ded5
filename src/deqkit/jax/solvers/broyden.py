"""Limited-memory Broyden (first or second method) for the root of g(z) = f(z) − z; torch twin.

The inverse Jacobian of g is kept as J⁻¹ ≈ −I + U Vᵀ with at most ``memory`` rank-one terms in a
ring buffer. Unused slots hold zeros, so products over the whole buffer equal those over the
filled part and every shape stays static.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax.numpy as jnp

from ...core.options import BroydenOptions
from ._loops import bounded_step_search
from .base import Solver


def _inv_times(us, vs, x):
    """J⁻¹ x = −x + U (Vᵀ x)."""
    return -x + jnp.einsum("bmd,bm->bd", us, jnp.einsum("bmd,bd->bm", vs, x))


def _times_inv(us, vs, x):
    """xᵀ J⁻¹ = −xᵀ + (xᵀ U) Vᵀ."""
    return -x + jnp.einsum("bmd,bm->bd", vs, jnp.einsum("bmd,bd->bm", us, x))


@dataclass(frozen=True)
class Broyden(BroydenOptions, Solver):
    """Limited-memory Broyden root finder.

    Args:
        memory: number of rank-one updates kept (oldest dropped first).
        line_search: per-sample backtracking on ‖f(z) − z‖ (costs extra f-evaluations).
        max_halvings: backtracking trials per step when ``line_search`` is on.
        update: "good" (Broyden's first method) or "bad" (his second method).

    Converges where plain iteration diverges:

    >>> import jax.numpy as jnp
    >>> import deqkit.jax as dkj
    >>> sol = dkj.solve(lambda z: -2.0 * z + 1.0, jnp.zeros((2, 3)), solver=dkj.Broyden(), tol=1e-6)
    >>> int(sol.status), round(float(sol.z[0, 0]), 5)
    (0, 0.33333)
    """

    name: ClassVar[str] = "broyden"

    def init(self, z, fz):
        batch, width = z.shape
        buf = jnp.zeros((batch, self.memory, width), z.dtype)
        return buf, buf, jnp.asarray(0, jnp.int32)

    def step(self, fn, z, fz, memory, active):
        us, vs, count = memory
        g = fz - z
        direction = -_inv_times(us, vs, g)
        if self.line_search:
            z_new, fz_new, nfev = bounded_step_search(
                fn, z, fz, direction, active, self.max_halvings
            )
        else:
            z_new = z + direction
            fz_new, nfev = fn(z_new), jnp.asarray(1, jnp.int32)
        dz = z_new - z
        dg = (fz_new - z_new) - g
        inv_dg = _inv_times(us, vs, dg)
        if self.update == "good":
            v = _times_inv(us, vs, dz)
            denom = (v * dg).sum(axis=1, keepdims=True)
            tiny = (
                jnp.finfo(z.dtype).eps
                * jnp.linalg.norm(dz, axis=1, keepdims=True)
                * jnp.linalg.norm(dg, axis=1, keepdims=True)
            )
            usable = (jnp.abs(denom) > tiny) & jnp.isfinite(denom)
        else:  # Broyden's second method: least change in the inverse, v = Δg
            v = dg
            denom = jnp.linalg.norm(dg, axis=1, keepdims=True) ** 2
            usable = (denom > jnp.finfo(z.dtype).tiny) & jnp.isfinite(denom)
        safe = jnp.where(usable, denom, 1.0)
        u = jnp.where(usable, (dz - inv_dg) / safe, 0.0)
        u = jnp.nan_to_num(u, nan=0.0, posinf=0.0, neginf=0.0)
        v = jnp.where(usable, v, 0.0)
        slot = count % self.memory
        memory = us.at[:, slot].set(u), vs.at[:, slot].set(v), count + 1
        return z_new, fz_new, memory, nfev
