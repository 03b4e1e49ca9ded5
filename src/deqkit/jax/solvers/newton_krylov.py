"""Jacobian-free Newton–Krylov: Newton steps on g(z) = f(z) − z, each solved by GMRES.

Twin of ``deqkit.solvers.newton_krylov``. The Krylov basis and Hessenberg matrix have the static
size ``krylov_dim``; columns not built yet are stood in for by unit columns on rows the built part
never touches, so one QR of the full matrix yields the least-squares solution of the built part
(with zero weight on the rest) at every inner step.
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
        """Solve (J_f − I) d = rhs per sample from d = 0; returns ``(d, nfev)``."""
        jvp = self._jvp_of(fn, z, fz)
        batch, width = z.shape
        dim = self.krylov_dim
        tiny = jnp.finfo(z.dtype).tiny
        beta = jnp.linalg.norm(rhs, axis=1)
        basis = jnp.zeros((batch, dim + 1, width), z.dtype)
        basis = basis.at[:, 0].set(rhs / jnp.maximum(beta, tiny)[:, None])
        target = jnp.zeros((batch, dim + 1), z.dtype).at[:, 0].set(beta)
        rows = jnp.arange(dim + 1)

        def body(c):
            j, basis, hess, _, _, nfev = c
            w = jvp(basis[:, j]) - basis[:, j]

            def orthogonalise(i, wc):
                w, coeffs = wc
                c_i = jnp.where(i <= j, (w * basis[:, i]).sum(axis=1), 0.0)
                return w - c_i[:, None] * basis[:, i], coeffs.at[:, i].set(c_i)

            w, coeffs = jax.lax.fori_loop(
                0, dim + 1, orthogonalise, (w, jnp.zeros((batch, dim + 1), z.dtype))
            )
            norm_w = jnp.linalg.norm(w, axis=1)
            column = coeffs.at[:, j + 1].set(norm_w)
            hess = hess.at[:, :, j].set(column)
            basis = basis.at[:, j + 1].set(w / jnp.maximum(norm_w, tiny)[:, None])
            built = jnp.arange(dim) <= j
            stand_in = (rows[:, None] == jnp.arange(dim)[None, :] + 1).astype(z.dtype)
            full = jnp.where(built[None, None, :], hess, stand_in[None])
            q, r = jnp.linalg.qr(full)
            y = jax.scipy.linalg.solve_triangular(
                r, jnp.einsum("bij,bi->bj", q, target)[..., None], lower=False
            )[..., 0]
            y = jnp.where(built[None, :], y, 0.0)
            miss = jnp.linalg.norm(jnp.einsum("bij,bj->bi", hess, y) - target, axis=1)
            done = ~active | (miss <= self.krylov_tol * beta) | (norm_w <= tiny)
            return j + 1, basis, hess, y, jnp.all(done), nfev + 1

        start = (
            jnp.asarray(0, jnp.int32),
            basis,
            jnp.zeros((batch, dim + 1, dim), z.dtype),
            jnp.zeros((batch, dim), z.dtype),
            jnp.asarray(False),
            jnp.asarray(0, jnp.int32),
        )
        _, basis, _, y, _, nfev = bounded_loop(dim, lambda c: ~c[4], body, start)
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
