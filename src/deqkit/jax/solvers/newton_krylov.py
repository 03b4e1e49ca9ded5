"""Jacobian-free Newton–Krylov: Newton steps on g(z) = f(z) − z, each solved by GMRES.

Twin of ``deqkit.solvers.newton_krylov``. The Krylov basis and Hessenberg matrix have the static
size ``krylov_dim``; the least-squares problem is updated by one Givens rotation per inner step and
solved once per Newton step, columns not built standing in as unit columns with zero weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp

from ...core.options import NewtonKrylovOptions
from ._loops import bounded_loop, bounded_step_search
from .base import Solver


@dataclass(frozen=True)
class NewtonKrylov(NewtonKrylovOptions, Solver):
    """Newton's method with a matrix-free GMRES inner solve.

    Args:
        krylov_dim: maximum GMRES iterations (JVPs) per Newton step.
        krylov_tol: relative residual at which GMRES stops (all active samples).
        line_search: per-sample backtracking on ‖f(z) − z‖.
        max_halvings: backtracking trials per step.
        jvp: "autodiff" (forward-mode, exact) or "finite_difference" (one extra f-call each).

    >>> import jax.numpy as jnp
    >>> import deqkit.jax as dkj
    >>> sol = dkj.solve(lambda z: -2.0 * z + 1.0, jnp.zeros((2, 3)), solver="newton_krylov")
    >>> int(sol.status), round(float(sol.z[0, 0]), 5)
    (0, 0.33333)
    """

    name: ClassVar[str] = "newton_krylov"

    @property
    def mixes_rows(self) -> bool:
        """The per-sample line search mixes rows of its trial evaluations."""
        return self.line_search

    def init(self, z, fz):
        return None

    def _jvp_of(self, fn, z, fz):
        """``v ↦ J_f(z) v``. With autodiff f is linearised once per Newton step, so each GMRES
        step costs only the linear part (each still counts as one f-evaluation, as in torch)."""
        if self.jvp == "autodiff":
            return jax.linearize(fn, z)[1]
        eps = jnp.finfo(z.dtype).eps ** 0.5
        h0 = eps * (1.0 + jnp.linalg.norm(z, axis=1, keepdims=True))

        def jvp(v):
            h = h0 / jnp.maximum(jnp.linalg.norm(v, axis=1, keepdims=True), eps)
            return (fn(z + h * v) - fz) / h

        return jvp

    def _gmres(self, fn, z, fz, rhs, active):
        """Solve (J_f − I) d = rhs per sample from d = 0; returns ``(d, nfev)``.

        The least-squares problem min ‖H y − β e₁‖ is kept in QR form by one Givens rotation
        per inner step (as in Saad & Schultz's GMRES): its residual is |g_{j+1}| at no cost and
        the triangular solve for y runs once, after the last step — the same solution as a QR of
        H at every step (the torch twin's lstsq), without squaring H's condition number.
        """
        jvp = self._jvp_of(fn, z, fz)
        batch, width = z.shape
        dim = self.krylov_dim
        tiny = jnp.finfo(z.dtype).tiny
        beta = jnp.linalg.norm(rhs, axis=1)
        basis = jnp.zeros((batch, dim + 1, width), z.dtype)
        basis = basis.at[:, 0].set(rhs / jnp.maximum(beta, tiny)[:, None])
        slots = jnp.arange(dim + 1)

        def body(c):
            j, basis, tri, g, cs, sn, _, nfev = c
            w = jvp(basis[:, j]) - basis[:, j]

            def orthogonalise(i, wc):
                w, coeffs = wc
                c_i = jnp.where(i <= j, (w * basis[:, i]).sum(axis=1), 0.0)
                return w - c_i[:, None] * basis[:, i], coeffs.at[:, i].set(c_i)

            w, h = jax.lax.fori_loop(
                0, dim + 1, orthogonalise, (w, jnp.zeros((batch, dim + 1), z.dtype))
            )
            norm_w = jnp.linalg.norm(w, axis=1)
            h = h.at[:, j + 1].set(norm_w)
            basis = basis.at[:, j + 1].set(w / jnp.maximum(norm_w, tiny)[:, None])

            def rotate(i, h):  # the earlier rotations, in order, on the new column
                a, b = h[:, i], h[:, i + 1]
                keep = i < j
                return (
                    h.at[:, i]
                    .set(jnp.where(keep, cs[:, i] * a + sn[:, i] * b, a))
                    .at[:, i + 1]
                    .set(jnp.where(keep, -sn[:, i] * a + cs[:, i] * b, b))
                )

            h = jax.lax.fori_loop(0, dim, rotate, h, unroll=True)
            a, b = h[:, j], h[:, j + 1]
            r = jnp.hypot(a, b)
            safe = jnp.where(r > 0, r, 1.0)
            c_j, s_j = jnp.where(r > 0, a / safe, 1.0), jnp.where(r > 0, b / safe, 0.0)
            h = jnp.where(slots[None, :] == j, r[:, None], jnp.where(slots == j + 1, 0.0, h))
            tri = tri.at[:, :, j].set(h)
            g_j = g[:, j]
            g = g.at[:, j].set(c_j * g_j).at[:, j + 1].set(-s_j * g_j)
            cs, sn = cs.at[:, j].set(c_j), sn.at[:, j].set(s_j)
            miss = jnp.abs(g[:, j + 1])
            done = ~active | (miss <= self.krylov_tol * beta) | (norm_w <= tiny)
            return j + 1, basis, tri, g, cs, sn, jnp.all(done), nfev + 1

        start = (
            jnp.asarray(0, jnp.int32),
            basis,
            jnp.zeros((batch, dim + 1, dim), z.dtype),
            jnp.zeros((batch, dim + 1), z.dtype).at[:, 0].set(beta),
            jnp.ones((batch, dim), z.dtype),
            jnp.zeros((batch, dim), z.dtype),
            jnp.asarray(False),
            jnp.asarray(0, jnp.int32),
        )
        built, basis, tri, g, _, _, _, nfev = bounded_loop(dim, lambda c: ~c[6], body, start)
        # Columns not built are unit columns with a zero right-hand side: y is 0 there.
        used = jnp.arange(dim) < built
        square = jnp.where(used[None, None, :], tri[:, :dim], jnp.eye(dim, dtype=z.dtype)[None])
        y = jax.scipy.linalg.solve_triangular(
            square, jnp.where(used[None, :], g[:, :dim], 0.0)[..., None], lower=False
        )[..., 0]
        return jnp.einsum("bk,bkd->bd", y, basis[:, :dim]), nfev

    def step(self, fn, z, fz, memory, active):
        direction, nfev = self._gmres(fn, z, fz, z - fz, active)
        direction = jnp.nan_to_num(direction, nan=0.0, posinf=0.0, neginf=0.0)
        if self.line_search:
            z_new, fz_new, more = bounded_step_search(
                fn, z, fz, direction, active, self.max_halvings
            )
        else:
            z_new = z + direction
            fz_new, more = fn(z_new), jnp.asarray(1, jnp.int32)
        return z_new, fz_new, memory, nfev + more
