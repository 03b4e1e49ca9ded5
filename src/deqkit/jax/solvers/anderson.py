"""Anderson acceleration (type II), regularised and safeguarded; twin of deqkit.solvers.anderson.

The history is a ring buffer of fixed size ``m``; while it is filling, the unused slots of the Gram
system are replaced by identity rows with a zero right-hand side, so one static-shape solve gives
exactly the weights of the smaller system the torch solver builds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp

from ...core.options import AndersonOptions
from .base import Solver


@dataclass(frozen=True)
class Anderson(AndersonOptions, Solver):
    """Anderson acceleration.

    Args:
        m: history size (number of past iterates mixed).
        lam: Tikhonov regularisation of the Gram matrix, relative to its smallest diagonal
            entry (the squared norm of the smallest residual in the history).
        damping: τ in (0, 1]; the new iterate is Σα((1 − τ)xᵢ + τ f(xᵢ)).

    >>> import jax.numpy as jnp
    >>> import deqkit.jax as dkj
    >>> A = 0.9 * jnp.eye(4)
    >>> sol = dkj.solve(lambda z: z @ A.T + 1.0, jnp.zeros((1, 4)), solver=dkj.Anderson(m=3))
    >>> int(sol.status), round(float(sol.z[0, 0]), 3), int(sol.nfev) < 10
    (0, 10.0, True)
    """

    name: ClassVar[str] = "anderson"

    starts_in_loop: ClassVar[bool] = True

    def empty(self, z):
        batch, width = z.shape
        xs = jnp.zeros((batch, self.m, width), z.dtype)
        gram = jnp.zeros((batch, self.m, self.m), z.dtype)
        return xs, xs, gram, jnp.asarray(0, jnp.int32)

    def init(self, z, fz):
        return self._push(self.empty(z), z, fz - z)

    def _push(self, memory, x, g):
        xs, gs, gram, count = memory
        slot = count % self.m
        xs = xs.at[:, slot].set(x)
        gs = gs.at[:, slot].set(g)
        row = jnp.einsum("bmd,bd->bm", gs, g)
        gram = gram.at[:, slot, :].set(row).at[:, :, slot].set(row)
        return xs, gs, gram, count + 1

    def _weights(self, gram, valid, newest):
        eye = jnp.eye(self.m, dtype=gram.dtype)
        both = valid[:, None] & valid[None, :]
        diag = jnp.diagonal(gram, axis1=1, axis2=2)
        smallest = jnp.min(jnp.where(valid[None, :], diag, jnp.inf), axis=1)
        scale = jnp.maximum(smallest, jnp.finfo(gram.dtype).tiny)
        shift = jnp.where(valid[None, :], self.lam * scale[:, None], 1.0)
        system = jnp.where(both[None], gram, 0.0) + eye[None] * shift[:, None, :]
        ones = jnp.broadcast_to(valid.astype(gram.dtype), (gram.shape[0], self.m))
        fallback = jnp.broadcast_to(jnp.arange(self.m) == newest, ones.shape).astype(gram.dtype)
        return _mixing_weights(system, ones, fallback)

    def step(self, fn, z, fz, memory, active):
        xs, gs, gram, count = memory
        k = jnp.minimum(count, self.m)
        alpha = self._weights(gram, jnp.arange(self.m) < k, (count - 1) % self.m)
        x_mix = jnp.einsum("bm,bmd->bd", alpha, xs)
        g_mix = jnp.einsum("bm,bmd->bd", alpha, gs)
        # A plain (damped) step while the history holds one pair; from the empty history
        # (count 0, called with fz = z = z0) the same expression proposes z0 itself.
        first = fz if self.damping == 1.0 else z + self.damping * (fz - z)
        z_new = jnp.where(k <= 1, first, x_mix + self.damping * g_mix)
        fz_new = fn(z_new)
        return z_new, fz_new, self._push(memory, z_new, fz_new - z_new), jnp.asarray(1, jnp.int32)


def _solve_weights(system, ones):
    # Plain pivoted LU like torch's solve_ex (jnp.linalg.solve adds a custom_linear_solve
    # wrapper that costs tracing time and is not needed here).
    lu, pivots, _ = jax.lax.linalg.lu(system)
    y = jax.scipy.linalg.lu_solve((lu, pivots), ones[..., None])[..., 0]
    total = y.sum(axis=1, keepdims=True)
    alpha = y / total
    ok = jnp.all(jnp.isfinite(alpha), axis=1) & (jnp.abs(total[:, 0]) > 0)
    return lu, pivots, y, total, alpha, ok


@jax.custom_jvp
def _mixing_weights(system, ones, fallback):
    """α = y / Σy with system · y = ones, or ``fallback`` where that fails (a singular system:
    a history of exactly zero residuals)."""
    *_, alpha, ok = _solve_weights(system, ones)
    return jnp.where(ok[:, None], alpha, fallback)


@_mixing_weights.defjvp
def _mixing_weights_jvp(primals, tangents):
    # The derivative of the solve, taken only where it succeeded: autodiff of the primal would
    # push the failed samples' Inf through the discarded branch of the select as 0 · Inf = NaN
    # (the unrolled backward differentiates every step, also after a sample converged exactly).
    system, ones, fallback = primals
    d_system = tangents[0]
    lu, pivots, y, total, alpha, ok = _solve_weights(system, ones)
    keep = ok[:, None]
    eye = jnp.eye(system.shape[-1], dtype=system.dtype)
    lu = jnp.where(keep[..., None], lu, eye)
    y, total = jnp.where(keep, y, 1.0), jnp.where(keep, total, 1.0)
    dy = -jax.scipy.linalg.lu_solve((lu, pivots), (d_system @ y[..., None]))[..., 0]
    d_alpha = dy / total - y * dy.sum(axis=1, keepdims=True) / total**2
    return jnp.where(keep, alpha, fallback), jnp.where(keep, d_alpha, 0.0)
