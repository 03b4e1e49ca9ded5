"""Limited-memory Broyden (first or second method) for the root of g(z) = f(z) − z; torch twin.

The inverse Jacobian of g is kept as H = J⁻¹ ≈ −I + U Vᵀ with at most ``memory`` rank-one terms
in a ring buffer, and the algorithm is the torch solver's: g(z) and the next direction −H g(z)
are carried, so a step passes over the history twice ("bad") or four times ("good").

Cost is kept to the filled part of the history: the (B, slots, D) buffers are read in chunks of
:data:`CHUNK` slots by a loop that stops at the last filled chunk (unused slots hold zeros, so a
partly filled chunk reads as the smaller history). A step's new term is written into the buffers
at the start of the next step, before any read: every read of a buffer then follows its only
write, and XLA updates the loop-carried buffers in place (writing at the end of the step, after
reads that do not feed the write, made it copy both buffers twice per iteration). Under reverse-
mode autodiff through the solve (``unroll``) the loop runs over every chunk at a static length.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import jax
import jax.numpy as jnp

from ...core.options import BroydenOptions
from ._loops import bounded_step_search
from .base import Solver

#: Slots per chunk of the history read by one pass of the product loop.
CHUNK = 8


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class BroydenState:
    """Broyden's final inverse-Jacobian estimate J_g⁻¹ ≈ −I + Σᵢ uᵢ vᵢᵀ of g(z) = f(z) − z, per
    sample (``us``, ``vs``: (B, memory, D); unused slots are zero), as ``Solution.state`` hands
    it on. A sample that stopped early keeps the estimate it had when it stopped (its later
    secant pairs would be wrong), as in the torch solver.
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


def _products(us, vs, g_new, dz, chunks):
    """``(−H g_new, Hᵀ dz or None)`` over the first ``chunks`` chunks (a traced count, or a
    Python int for a static loop): −H x = x − U (Vᵀ x), Hᵀ x = −x + V (Uᵀ x)."""

    def body(j, acc):
        u = jax.lax.dynamic_slice_in_dim(us, j * CHUNK, CHUNK, 1)
        v = jax.lax.dynamic_slice_in_dim(vs, j * CHUNK, CHUNK, 1)
        out = [acc[0] - jnp.einsum("bcd,bc->bd", u, jnp.einsum("bcd,bd->bc", v, g_new))]
        if dz is not None:
            out.append(acc[1] + jnp.einsum("bcd,bc->bd", v, jnp.einsum("bcd,bd->bc", u, dz)))
        return tuple(out)

    init = (g_new,) if dz is None else (g_new, -dz)
    out = jax.lax.fori_loop(0, chunks, body, init)
    return out[0], (None if dz is None else out[1])


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
    #: Whether the product loop stops at the last filled chunk (not reverse-differentiable).
    dynamic: ClassVar[bool] = True

    @property
    def mixes_rows(self) -> bool:
        """The per-sample line search mixes rows of its trial evaluations."""
        return self.line_search

    def static(self) -> Solver:
        """This solver with a static-length product loop, for reverse-mode autodiff."""
        return _StaticBroyden(**{f.name: getattr(self, f.name) for f in fields(self)})

    def final_state(self, memory) -> BroydenState:
        us, vs = self._flush(memory)
        return BroydenState(us[:, : self.memory], vs[:, : self.memory])

    def init(self, z, fz):
        batch, width = z.shape
        slots = -(-self.memory // CHUNK) * CHUNK
        buf = jnp.zeros((batch, slots, width), z.dtype)
        g, zero = fz - z, jnp.zeros_like(z)
        # U, V, the number of terms made, g(z), the direction −H g(z) (−H = I at the start), and
        # the newest term (u, v), not yet in U and V. Its slot is (count − 1) mod memory: with
        # count 0 that is an empty slot, and writing zeros there changes nothing.
        return buf, buf, jnp.asarray(0, jnp.int32), g, g, zero, zero

    def _flush(self, memory):
        """U and V with the newest term written into its slot."""
        us, vs, count, _, _, u, v = memory
        slot = (count - 1) % self.memory
        return us.at[:, slot].set(u), vs.at[:, slot].set(v)

    def step(self, fn, z, fz, memory, active):
        us, vs = self._flush(memory)
        _, _, count, g, direction, _, _ = memory
        if self.line_search:
            z_new, fz_new, nfev = bounded_step_search(
                fn, z, fz, direction, active, self.max_halvings
            )
        else:
            z_new = z + direction
            fz_new, nfev = fn(z_new), jnp.asarray(1, jnp.int32)
        dz = z_new - z
        g_new = fz_new - z_new
        dg = g_new - g
        good = self.update == "good"
        total = us.shape[1] // CHUNK
        chunks = (jnp.minimum(count, self.memory) + CHUNK - 1) // CHUNK if self.dynamic else total
        d, v = _products(us, vs, g_new, dz if good else None, chunks)
        # H += u vᵀ with u = (dz − H dg) / (vᵀdg), v = Hᵀdz ("good") or dg ("bad"). Since
        # direction = −H g, H dg = direction − d with d = −H g_new, so the numerator is
        # dz − direction + d, and the next direction is −(H + u vᵀ) g_new = d − u (vᵀ g_new),
        # plus the term of the slot about to be overwritten (zero while the ring fills).
        numer = d + (dz - direction) if self.line_search else d
        tiny = jnp.finfo(z.dtype)
        if good:
            denom = (v * dg).sum(axis=1, keepdims=True)
            norms = jnp.linalg.norm(dz, axis=1, keepdims=True)
            norms = norms * jnp.linalg.norm(dg, axis=1, keepdims=True)
            usable = (jnp.abs(denom) > tiny.eps * norms) & jnp.isfinite(denom)
        else:  # Broyden's second method: least change in the inverse, v = Δg
            v = dg
            denom = _safe_norm(dg) ** 2
            usable = (denom > tiny.tiny) & jnp.isfinite(denom)
        scale = jnp.where(usable, 1.0 / jnp.where(usable, denom, 1.0), 0.0)
        u = jnp.nan_to_num(jnp.where(usable, numer * scale, 0.0), nan=0.0, posinf=0.0, neginf=0.0)
        v = jnp.where(usable, v, 0.0)
        slot = count % self.memory
        old_u, old_v = us[:, slot], vs[:, slot]
        next_direction = (
            d
            - u * (v * g_new).sum(axis=1, keepdims=True)
            + old_u * (old_v * g_new).sum(axis=1, keepdims=True)
        )
        # A sample no longer active keeps its estimate (its secant pair would be wrong).
        keep = active[:, None]
        u, v = jnp.where(keep, u, old_u), jnp.where(keep, v, old_v)
        return z_new, fz_new, (us, vs, count + 1, g_new, next_direction, u, v), nfev


@dataclass(frozen=True)
class _StaticBroyden(Broyden):
    """:class:`Broyden` reading every chunk of its history: reverse-mode autodiff passes."""

    dynamic: ClassVar[bool] = False


def _safe_norm(x):
    """Row norms (B, 1) whose gradient is 0, not NaN, at an exactly zero row (a sample that has
    converged exactly, whose later steps the unrolled backward still differentiates)."""
    nonzero = jnp.any(x != 0, axis=1, keepdims=True)
    norm = jnp.linalg.norm(jnp.where(nonzero, x, 1.0), axis=1, keepdims=True)
    return jnp.where(nonzero, norm, 0.0)
