"""Jacobian-free Newton–Krylov: Newton steps on g(z) = f(z) − z, each solved by GMRES.

The Newton system (J_f − I) d = −g is solved per sample in a Krylov space built from
Jacobian-vector products of f (Knoll & Keyes, J. Comput. Phys. 2004), so no Jacobian is formed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.autograd.forward_ad as fwAD

from ..core.options import NewtonKrylovOptions
from ._buffers import write_slot
from ._linesearch import bounded_step_search
from .base import Evaluate, Solver


@dataclass(frozen=True)
class NewtonKrylov(NewtonKrylovOptions, Solver):
    """Newton's method with a matrix-free GMRES inner solve.

    Args:
        krylov_dim: maximum GMRES iterations (JVPs) per Newton step.
        krylov_tol: relative residual at which GMRES stops (all active samples).
        line_search: per-sample backtracking on ‖f(z) − z‖.
        max_halvings: backtracking trials per step.
        jvp: "autodiff" (forward-mode AD on dual tensors, exact; works with modules that
            update buffers, e.g. BatchNorm in train mode) or "finite_difference" (one extra
            f-call each).

    >>> import deqkit as dk
    >>> f = lambda z: -2.0 * z + 1.0
    >>> sol = dk.solve(f, torch.zeros(2, 3), solver="newton_krylov", tol=1e-6)
    >>> sol.status.name, round(sol.z[0, 0].item(), 6)
    ('CONVERGED', 0.333333)
    """

    name: ClassVar[str] = "newton_krylov"

    @property
    def mixes_rows(self) -> bool:
        """The per-sample line search mixes rows of its trial evaluations."""
        return self.line_search

    def init(self, z, fz):
        return None

    def _jvp(self, evaluate: Evaluate, z, fz, v):
        if self.jvp == "autodiff":
            return _forward_jvp(evaluate, z, v)
        eps = torch.finfo(z.dtype).eps ** 0.5
        h = eps * (1.0 + z.norm(dim=1, keepdim=True)) / v.norm(dim=1, keepdim=True).clamp_min(eps)
        return (evaluate(z + h * v) - fz) / h

    def _gmres(self, evaluate, z, fz, rhs, active):
        """Solve (J_f − I) d = rhs per sample; d starts at 0."""
        batch, width = z.shape
        tiny = torch.finfo(z.dtype).tiny
        beta = rhs.norm(dim=1)
        basis = z.new_zeros(batch, self.krylov_dim + 1, width)
        basis = write_slot(basis, 0, rhs / beta.clamp_min(tiny)[:, None])
        hess = z.new_zeros(batch, self.krylov_dim + 1, self.krylov_dim)
        y = z.new_zeros(batch, 1, 1)
        for j in range(self.krylov_dim):
            w = self._jvp(evaluate, z, fz, basis[:, j]) - basis[:, j]
            coeffs = []
            for i in range(j + 1):
                c = (w * basis[:, i]).sum(dim=1)
                w = w - c[:, None] * basis[:, i]
                coeffs.append(c)
            coeffs.append(w.norm(dim=1))
            column = torch.stack(coeffs + [z.new_zeros(batch)] * (self.krylov_dim - j - 1), dim=1)
            hess = write_slot(hess, j, column, dim=2)
            basis = write_slot(basis, j + 1, w / coeffs[-1].clamp_min(tiny)[:, None])
            target = torch.zeros(batch, j + 2, 1, dtype=z.dtype, device=z.device)
            target[:, 0, 0] = beta
            # A sample already at its root (‖rhs‖ near the underflow range) can overflow its
            # Krylov basis; LAPACK must not see the Inf/NaN (the direction is zeroed later).
            small = torch.nan_to_num(hess[:, : j + 2, : j + 1], nan=0.0, posinf=0.0, neginf=0.0)
            y = torch.linalg.lstsq(small, target).solution
            miss = (torch.bmm(small, y) - target).norm(dim=(1, 2))
            done = ~active | (miss <= self.krylov_tol * beta) | (coeffs[-1] <= tiny)
            if bool(done.all()):
                break
        k = y.shape[1]
        return torch.bmm(y.transpose(1, 2), basis[:, :k]).squeeze(1)

    def step(self, evaluate: Evaluate, z, fz, memory, active):
        direction = self._gmres(evaluate, z, fz, z - fz, active)
        direction = torch.nan_to_num(direction, nan=0.0, posinf=0.0, neginf=0.0)
        if self.line_search:
            z_new, fz_new = bounded_step_search(
                evaluate, z, fz, direction, active, self.max_halvings
            )
        else:
            z_new = z + direction
            fz_new = evaluate(z_new)
        return z_new, fz_new, memory


def _forward_jvp(evaluate: Evaluate, z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """J_f(z) v by forward-mode AD on dual tensors (not ``torch.func.jvp``): f may then update
    buffers in place, as BatchNorm does in train mode; the buffers never keep a tangent."""
    with fwAD.dual_level():
        try:
            out = evaluate(fwAD.make_dual(z, v))
        except NotImplementedError as err:
            raise ValueError(
                f"NewtonKrylov(jvp='autodiff') needs forward-mode AD through f, which failed "
                f"({err}); use NewtonKrylov(jvp='finite_difference')"
            ) from err
        tangent = fwAD.unpack_dual(out).tangent
    return torch.zeros_like(z) if tangent is None else tangent
