"""How gradients pass through the fixed point z* = f(z*).

Each strategy is a small frozen dataclass of its options with one method, ``attach``, that takes
the detached solution z* of the forward solve and returns a tensor equal (or close) to z* that
carries the gradient:

* :class:`Implicit` -- the implicit function theorem. The output has z*'s value and f(z*)'s
  gradient path (f evaluated once with autograd on); a hook replaces the incoming gradient g by
  the solution u of the adjoint fixed point
  u = g + Jᵀu (J = ∂f/∂z at z*), solved matrix-free with vector–Jacobian products and any solver.
  Then u flows into f's parameters and inputs: exact gradients, memory of one f call.
* :class:`Phantom` -- k damped steps z ← (1 − τ)z + τf(z) from z*, differentiated explicitly
  (Geng et al., NeurIPS 2021).
* :class:`OneStep` -- one step, the Jacobian-free backward (Fung et al., AAAI 2022).
* :class:`Unrolled` -- backpropagate through every solver iteration (for checks, small problems).
* :class:`Shine` -- reuse the forward Broyden inverse-Jacobian estimate instead of an adjoint
  solve (Ramzi et al., ICLR 2022).

No strategy lets a gradient reach z0: the forward solve starts from a detached copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch.autograd import forward_ad

from ._compat import next_sequence_nr
from ._exact_adjoint import NON_LEAF, CutHistory, graph_leaves, implicit_node
from .core import (
    BACKWARD_OPTIONS,
    FAILURE_POLICIES,
    DEQWarning,
    ImplicitOptions,
    OneStepOptions,
    PhantomOptions,
    UnrolledOptions,
    convert,
)
from .solvers import Solution, iterate, make_solver
from .solvers._report import report_failure

__all__ = [
    "BACKWARDS",
    "Backward",
    "DEQWarning",
    "FAILURE_POLICIES",
    "Implicit",
    "OneStep",
    "Phantom",
    "Shine",
    "Unrolled",
    "make_backward",
    "report_failure",
]

FlatMap = Callable[[torch.Tensor], torch.Tensor]


class Backward:
    """Interface: ``attach(f, z_star, solution, on_failure)`` returns z* carrying gradients."""

    name: ClassVar[str]
    unrolls_solver: ClassVar[bool] = False
    #: True when ``attach`` reads the forward solver's final state (``solution.state``);
    #: ``fixed_point`` then asks the solve to keep it.
    reads_solver_state: ClassVar[bool] = False

    def attach(
        self, f: FlatMap, z_star: torch.Tensor, solution: Solution, on_failure: str
    ) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class Implicit(ImplicitOptions, Backward):
    """Exact implicit (IFT) gradients through a matrix-free adjoint solve.

    Args:
        solver: solver for the adjoint fixed point u = g + Jᵀu (name or object).
        tol: adjoint tolerance, in ``stop_mode``; None (the default): the forward solve's tol,
            so the gradient is as accurate as z* (a fixed tighter value costs adjoint steps
            without making the gradient more accurate than the forward solve allows).
        max_iter: adjoint iteration budget; None (the default): the forward's ``max_iter``.
        stop_mode: "rel", "abs" or "mixed" (default "rel": scale-free in the loss).

    Second derivatives (``create_graph=True``, e.g. hyper-gradients, Hessians) are exact when
    every tensor f differentiates besides z is a leaf (parameters, leaf inputs): the backward
    is then a node whose gradient is differentiable once more (``deqkit/_exact_adjoint.py``),
    at the same first-derivative cost. When f uses a non-leaf tensor made before the solve
    (an encoder's output, a DEQ layer's computed input, a view ``torch.autograd.functional``
    passes), and for third
    derivatives, ``create_graph=True`` raises ``NotImplementedError`` rather than give a
    derivative that misses the terms through u and z*; ``backward="unrolled"`` is exact for
    the unrolled solve at any order.

    Each adjoint VJP walks f's own graph only: older non-leaf inputs (h_{t−1} of a recurrence)
    reach f as detached copies, so a T-step recurrence of DEQs costs O(T) backward, not O(T²).

    >>> import deqkit as dk
    >>> w = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    >>> z0 = torch.zeros(1, 1, dtype=torch.float64)
    >>> f = lambda z: w * z + 1.0
    >>> z, sol = dk.fixed_point(f, z0, tol=1e-12, backward=dk.Implicit(tol=1e-12))
    >>> z.sum().backward()
    >>> round(w.grad.item(), 4)  # z* = 1/(1 - w), dz*/dw = 1/(1 - w)^2
    4.0
    """

    name: ClassVar[str] = "implicit"

    def attach(self, f, z_star, solution, on_failure):
        tol, max_iter = self.tol, self.max_iter
        if tol is None or max_iter is None:
            raise ValueError(
                "Implicit.attach needs a resolved tol and max_iter: call "
                "for_forward(tol, max_iter) first (fixed_point and DEQ do)"
            )
        z_leaf = z_star.detach().requires_grad_()
        start = next_sequence_nr()
        with CutHistory(start) as cut:  # f's own graph: older non-leaf inputs as detached copies
            fz = f(z_leaf)
        if not fz.requires_grad:  # nothing to differentiate (forward-mode tangents are kept)
            return valued_at(z_star, fz)
        found = graph_leaves(fz, z_leaf, start)
        if found and forward_ad.unpack_dual(fz).tangent is None:
            # A node: the adjoint's VJPs walk f's graph alone, not the copies' history (which
            # made a T-step recurrence's backward O(T²)). With leaves only, its gradient is
            # differentiable again.
            leaves, outer, copies = cut.split(found)
            return implicit_node(f, fz, z_leaf, leaves, self, solution, on_failure, outer, copies)
        if cut.cut:  # an input the cut missed, or forward-mode tangents: f's whole graph
            fz = f(z_leaf)
        solver = make_solver(self.solver)

        def adjoint(grad: torch.Tensor | None) -> torch.Tensor | None:
            if grad is None:  # an undefined gradient stays undefined (autograd's convention)
                return None
            refuse_create_graph("implicit", NON_LEAF)
            if forward_ad.unpack_dual(fz).tangent is not None:
                raise NotImplementedError(
                    "reverse mode through backward='implicit' while f's forward-mode tangents "
                    "are live (forward-over-reverse) is not supported; call backward() after "
                    "leaving the forward_ad.dual_level block"
                )

            def adjoint_map(u: torch.Tensor) -> torch.Tensor:
                (vjp,) = torch.autograd.grad(fz, z_leaf, u, retain_graph=True)
                return grad + vjp

            with torch.no_grad():
                back = iterate(
                    solver,
                    adjoint_map,
                    grad,
                    tol=tol,
                    max_iter=max_iter,
                    stop_mode=self.stop_mode,
                    # f coupling samples couples the adjoint's too: follow the forward's scope.
                    stop_scope=solution.stop_scope,
                )
            solution._set_backward(back)
            report_failure(back, on_failure, "implicit backward (adjoint) solve")
            return back.z

        # The hook sits on an alias of f(z*): the adjoint VJPs start from fz itself and so never
        # re-enter the hook, which keeps the layer re-entrant (two calls per forward work).
        out = fz.view_as(fz)
        out.register_hook(adjoint)
        return valued_at(z_leaf, out)


def valued_at(z_star: torch.Tensor, fz: torch.Tensor) -> torch.Tensor:
    """``fz``'s gradient path with ``z_star``'s value (exactly: ``fz − fz`` is 0), so that the
    returned state is the one the solver's status and residuals describe, not one more step.

    >>> z, fz = torch.ones(2), torch.full((2,), 3.0, requires_grad=True)
    >>> valued_at(z, fz).tolist(), valued_at(z, fz).requires_grad
    ([1.0, 1.0], True)
    """
    return z_star.detach() + (fz - fz.detach())


def refuse_create_graph(name: str, why: str = "") -> None:
    """Raise when the backward runs with ``create_graph=True`` (grad mode is on inside a hook
    only then): the adjoint is solved, not recorded, so higher derivatives would be wrong."""
    if torch.is_grad_enabled():
        raise NotImplementedError(
            f"higher derivatives through backward={name!r} are not supported here "
            f"(create_graph=True reached an adjoint solve whose result has no graph{why}); use "
            "backward='unrolled' for exact higher derivatives of the unrolled solve, or "
            "'phantom'/'one_step'"
        )


@dataclass(frozen=True)
class Phantom(PhantomOptions, Backward):
    """Phantom gradient: differentiate k damped steps z ← (1 − τ)z + τf(z) taken from z*.

    Args:
        steps: k, the number of differentiated steps.
        damping: τ in (0, 1].

    >>> Phantom(steps=3, damping=0.5)
    Phantom(steps=3, damping=0.5)
    """

    name: ClassVar[str] = "phantom"

    def attach(self, f, z_star, solution, on_failure):
        z = z_star.detach()
        for _ in range(self.steps):
            fz = f(z)
            z = fz if self.damping == 1.0 else torch.lerp(z, fz, self.damping)
        return z


@dataclass(frozen=True)
class OneStep(OneStepOptions, Backward):
    """Jacobian-free backward: the gradient of one step f(z*) with z* held constant.

    >>> OneStep()
    OneStep()
    """

    name: ClassVar[str] = "one_step"

    def attach(self, f, z_star, solution, on_failure):
        return f(z_star.detach())


@dataclass(frozen=True)
class Unrolled(UnrolledOptions, Backward):
    """Backpropagate through every forward solver iteration (memory grows with iterations).

    >>> Unrolled()
    Unrolled()
    """

    name: ClassVar[str] = "unrolled"
    unrolls_solver: ClassVar[bool] = True

    def attach(self, f, z_star, solution, on_failure):
        return z_star


from .shine import Shine  # noqa: E402 (Shine builds on Backward above)

BACKWARDS: dict[str, type[Backward]] = {
    cls.name: cls for cls in (Implicit, Phantom, OneStep, Unrolled, Shine)
}
assert set(BACKWARDS) == set(BACKWARD_OPTIONS)  # the torch backend implements every backward


def make_backward(spec) -> Backward:
    """Turn a backward name, or a backward object of either backend, into a torch backward.

    >>> make_backward("phantom")
    Phantom(steps=5, damping=1.0)
    """
    return convert(spec, BACKWARDS, "backward", Backward)
