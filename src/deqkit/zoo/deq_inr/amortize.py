"""The amortised step with (Implicit)²'s one-step gradient: f once, gradient through I + Jᵀ.

An amortised training step applies f once to each coordinate's cached state z and trains on
f(z). Differentiating that application alone (the Jacobian-free gradient) multiplies the
incoming gradient u by I. The (Implicit)² code (Huang, Bai, Kolter, NeurIPS 2021, its
``OnestepBackward``) multiplies it by I + Jᵀ, J = ∂f/∂z at the cached state: the first two terms
of the Neumann series of the implicit gradient (I − Jᵀ)⁻¹u. :func:`neumann_step` takes k ≥ 1
such terms, u + Jᵀu + … + (Jᵀ)ᵏu, at one f evaluation and k vector–Jacobian products, and
returns the step's residual ‖f(z) − z‖ as a :class:`~deqkit.Solution` (the state need not be a
fixed point, so "converged" here only says whether that one step moved less than ``tol``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

import deqkit as dk
from deqkit.core import stop_residual

__all__ = ["neumann_step"]


def _step_solution(z0: torch.Tensor, fz: torch.Tensor, tol: float, stop_mode) -> dk.Solution:
    with torch.no_grad():
        abs_res = torch.linalg.vector_norm(fz - z0, dim=1)
        scale = torch.linalg.vector_norm(fz, dim=1).clamp_min(torch.finfo(fz.dtype).tiny)
        res = stop_residual(stop_mode, abs_res, scale)
        finite = torch.isfinite(res)
    converged = finite & (res <= tol)
    if not bool(finite.all()):
        status = dk.Status.NONFINITE
    else:
        status = dk.Status.CONVERGED if bool(converged.all()) else dk.Status.MAX_ITER
    return dk.Solution(
        z=fz, status=status, converged=converged,
        nstep=torch.ones(len(fz), dtype=torch.long, device=fz.device),
        residual=res, abs_residual=abs_res, rel_residual=abs_res / scale, nfev=1,
        stop_mode=stop_mode, tol=float(tol),
    )  # fmt: skip


def neumann_step(
    cell: Callable[[torch.Tensor, tuple[torch.Tensor, ...]], torch.Tensor],
    z0: torch.Tensor,
    g: tuple[torch.Tensor, ...],
    *,
    terms: int = 1,
    tol: float = 1e-3,
    stop_mode: str = "rel",
) -> tuple[torch.Tensor, dk.Solution]:
    """f(z0; g) once; its backward multiplies the incoming gradient by Σ_{i≤terms} (Jᵀ)^i.

    Args:
        cell: f, called as ``cell(z, g)``; normalised weights are evaluated once for the call.
        z0: (N, D) cached states (detached here: no gradient flows into the cache).
        g: the filter outputs, as the cell takes them.
        terms: k ≥ 1, the number of Jᵀ terms (1: (Implicit)²'s one-step backward).
        tol, stop_mode: how the step's residual is judged in the returned Solution.

    >>> lin = torch.nn.Linear(3, 3)
    >>> cell = lambda z, g: g[0] * lin(z)
    >>> z0, g = torch.randn(4, 3), (torch.rand(4, 3, requires_grad=True),)
    >>> z, sol = neumann_step(cell, z0, g, terms=1)
    >>> bool(torch.allclose(z, cell(z0, g))), sol.nfev
    (True, 1)
    >>> u = torch.randn(4, 3)
    >>> (grad,) = torch.autograd.grad(z, g[0], u)   # ∂/∂g of f with u → u + Jᵀu
    >>> J_T_u = (g[0] * u) @ lin.weight             # Jᵀu for f = g ⊙ (Wz + b)
    >>> bool(torch.allclose(grad, (u + J_T_u) * lin(z0)))
    True
    """
    if isinstance(terms, bool) or not isinstance(terms, int) or terms < 1:
        raise ValueError(f"terms must be an int >= 1, got {terms!r}")
    z0 = z0.detach().requires_grad_()
    with dk.cached_weights(cell):
        fz = cell(z0, g)

    def neumann(grad: torch.Tensor) -> torch.Tensor:
        total, term = grad, grad
        for _ in range(terms):
            (term,) = torch.autograd.grad(fz, z0, term, retain_graph=True)
            total = total + term
        return total

    # The hook sits on an alias of f(z0): its own VJPs start from fz and never re-enter it.
    out = fz.view_as(fz)
    if out.requires_grad:
        out.register_hook(neumann)
    return out, _step_solution(z0.detach(), fz.detach(), tol, stop_mode)
