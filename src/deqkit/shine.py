"""The SHINE backward: the implicit gradient from the forward Broyden inverse estimate.

SHINE (Ramzi et al., "SHINE: SHaring the INverse Estimate from the forward pass for bi-level
optimization and implicit models", ICLR 2022) skips the adjoint solve: Broyden already holds
J_g⁻¹ ≈ −I + U Vᵀ for g(z) = f(z) − z, so the implicit gradient u = (I − J_fᵀ)⁻¹ a is
approximated by u ≈ −(J_g⁻¹)ᵀ a = a − V (Uᵀ a) at the cost of two small matrix products.

The estimate reaches the backward through the general channel for a solver's final state,
``Solution.state`` (a :class:`~deqkit.solvers.BroydenState`): ``fixed_point`` asks the solve to
keep it because ``Shine.reads_solver_state`` is set. No solver wrapper, no side channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .backward import Backward, refuse_create_graph, valued_at
from .core import ShineOptions
from .solvers import BroydenState

__all__ = ["Shine"]


@dataclass(frozen=True)
class Shine(ShineOptions, Backward):
    """SHINE backward: the implicit gradient from the forward Broyden inverse estimate.

    No adjoint solve: the incoming gradient a becomes u = a − V (Uᵀ a) with the forward solve's
    low-rank J_g⁻¹ ≈ −I + U Vᵀ. Needs the ``"broyden"`` forward solver (checked when a ``DEQ`` is
    built and before ``fixed_point`` solves). The estimate is only as good as Broyden's secant
    information along the forward path; ``refine`` fixed-point steps u ← a + Jᵀu (one
    vector–Jacobian product each) started from it close the gap.

    Args:
        refine: adjoint fixed-point steps applied after the SHINE estimate (0: pure SHINE).

    It refuses ``create_graph=True`` (higher derivatives): the estimate carries no graph.

    >>> import deqkit as dk
    >>> w = torch.tensor(0.5, requires_grad=True)
    >>> z, sol = dk.fixed_point(lambda z: w * z + 1.0, torch.zeros(1, 1), solver="broyden",
    ...                         backward=dk.Shine(), tol=1e-8)
    >>> z.sum().backward()
    >>> round(w.grad.item(), 3)  # exact: 1 / (1 - w)^2 = 4
    4.0
    """

    name: ClassVar[str] = "shine"
    reads_solver_state: ClassVar[bool] = True

    def attach(self, f, z_star, solution, on_failure):
        inverse = solution.state
        if not isinstance(inverse, BroydenState):
            raise ValueError(
                "Shine needs the forward Broyden state in solution.state; use it through "
                "fixed_point or DEQ with solver='broyden'"
            )
        z_leaf = z_star.detach().requires_grad_()
        fz = f(z_leaf)
        if not fz.requires_grad:  # nothing to differentiate
            return valued_at(z_star, fz)

        def adjoint(grad: torch.Tensor | None) -> torch.Tensor | None:
            if grad is None:
                return None
            refuse_create_graph("shine")
            with torch.no_grad():
                u = inverse.adjoint(grad)
                for _ in range(self.refine):
                    (vjp,) = torch.autograd.grad(fz, z_leaf, u, retain_graph=True)
                    u = grad + vjp
            return u

        # As in Implicit: the hook sits on an alias so refinement VJPs never re-enter it.
        out = fz.view_as(fz)
        out.register_hook(adjoint)
        return valued_at(z_leaf, out)
