"""Limited-memory Broyden (first or second method) for the root of g(z) = f(z) − z; torch twin.

The inverse Jacobian of g is kept as J⁻¹ ≈ −I + U Vᵀ with at most ``memory`` rank-one terms in a
ring buffer. Unused slots hold zeros, so products over the whole buffer equal those over the
filled part and every shape stays static.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp

from ...core.options import BroydenOptions
from ._loops import bounded_step_search
from .base import Solver


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class BroydenState:
    """Broyden's final inverse-Jacobian estimate J_g⁻¹ ≈ −I + Σᵢ uᵢ vᵢᵀ of g(z) = f(z) − z, per
    sample (``us``, ``vs``: (B, memory, D); unused slots are zero), as ``Solution.state`` hands
    it on. A sample that stopped early gets no further terms (its later secant pairs would be
    wrong), but a later step may overwrite one of its oldest slots with zeros once the ring is
    full, where the torch solver keeps the old term.
    """

    us: jax.Array
    vs: jax.Array

    def adjoint(self, grad: jax.Array) -> jax.Array:
        """Approximate solution u of u = grad + J_fᵀ u, i.e. u ≈ −J_g⁻ᵀ grad = grad − V (Uᵀ grad).

        >>> import jax.numpy as jnp
        >>> from deqkit.jax.solvers import iterate
        >>> sol = iterate(Broyden(), lambda z: 0.5 * z + 1.0, jnp.zeros((2, 3)), tol=1e-8,
        ...               keep_state=True)
        >>> g = jnp.ones((2, 3))  # the exact adjoint of f = 0.5 z + 1 is u = g / (1 - 0.5)
        >>> bool(jnp.allclose(sol.state.adjoint(g), 2 * g))
        True
        """
        coeff = jnp.einsum("bmd,bd->bm", self.us, grad)
        return grad - jnp.einsum("bm,bmd->bd", coeff, self.vs)


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

    @property
    def mixes_rows(self) -> bool:
        """The per-sample line search mixes rows of its trial evaluations."""
        return self.line_search

    def final_state(self, memory) -> BroydenState:
        return BroydenState(memory[0], memory[1])

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
        # A sample no longer active adds no term (its secant pair would be wrong).
        usable = usable & active[:, None]
        safe = jnp.where(usable, denom, 1.0)
        u = jnp.where(usable, (dz - inv_dg) / safe, 0.0)
        u = jnp.nan_to_num(u, nan=0.0, posinf=0.0, neginf=0.0)
        v = jnp.where(usable, v, 0.0)
        slot = count % self.memory
        memory = us.at[:, slot].set(u), vs.at[:, slot].set(v), count + 1
        return z_new, fz_new, memory, nfev
