"""What ``solve``/``fixed_point`` do with autograd beyond reverse mode, and with ``has_aux``.

* ``torch.func`` transforms (grad, vmap, jvp, jacrev, ...) wrap tensors in objects the solver's
  host bookkeeping cannot read. They are refused with one line at the first sight of a wrapped
  tensor (z0, or f's first output), before the solver touches it.
* Forward-mode AD (``torch.autograd.forward_ad``) is supported: the solver runs on primal
  values, and the tangent of z* is put back afterwards: for the implicit backward the exact
  ż = (I − J)⁻¹ ∂f/∂θ·θ̇, solved as the fixed point v = J v + ∂f/∂θ·θ̇ (each step one forward-mode
  evaluation of f); for phantom/one-step the tangent of their own steps from z*. The unrolled
  and SHINE backwards, whose tangents would need the solver's own iterations, are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.autograd import forward_ad

from ._compat import is_functorch_wrapped, pytree
from .core import ImplicitOptions
from .solvers import Solution, iterate, make_solver
from .solvers._report import report_failure

__all__ = [
    "GuardedMap",
    "attach_tangent",
    "aux_pair",
    "check_not_wrapped",
    "split_aux",
    "tangent_of",
]


def _transform_error(what: str) -> NotImplementedError:
    return NotImplementedError(
        f"{what} is a torch.func-transformed tensor (torch.func.grad/vmap/jvp/jacrev): deqkit's "
        "solvers do not run under torch.func; use torch.autograd (reverse mode, or "
        "torch.autograd.forward_ad for forward mode) and a batch dimension instead of vmap"
    )


def check_not_wrapped(state: Any, what: str) -> None:
    """Refuse a state with a leaf wrapped by a ``torch.func`` transform."""
    for leaf in pytree.tree_leaves(state):
        if isinstance(leaf, torch.Tensor) and is_functorch_wrapped(leaf):
            raise _transform_error(what)


def tangent_of(t: torch.Tensor) -> torch.Tensor | None:
    """The forward-mode tangent of ``t`` (None without one)."""
    return forward_ad.unpack_dual(t).tangent


class GuardedMap:
    """The flat map f, checked at its first call: a ``torch.func`` output is refused, a dual
    (forward-mode) output is seen (``dual``), and from then on only its primal is returned, so
    the solver's arithmetic never carries tangents."""

    def __init__(self, f: Callable[[torch.Tensor], torch.Tensor]):
        self.f = f
        self.dual = False
        self._first = True

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        out = self.f(z)
        if self._first:
            self._first = False
            if is_functorch_wrapped(out):
                raise _transform_error("f(z)")
            self.dual = tangent_of(out) is not None
        return forward_ad.unpack_dual(out).primal if self.dual else out


def split_aux(f: Callable, has_aux: bool) -> Callable:
    """f itself, or with ``has_aux`` the map z ↦ state of f(z) = (state, aux)."""
    if not has_aux:
        return f

    def state_only(z):
        return aux_pair(f(z))[0]

    return state_only


def aux_pair(out: Any) -> tuple[Any, Any]:
    """Check that f returned ``(state, aux)`` under ``has_aux=True``."""
    if not isinstance(out, tuple) or len(out) != 2:
        raise TypeError(
            f"with has_aux=True f must return a (state, aux) pair, got {type(out).__name__}"
            + (f" of length {len(out)}" if isinstance(out, tuple) else "")
        )
    return out


def attach_tangent(strategy: Any, f: Callable, sol: Solution, on_failure: str) -> torch.Tensor:
    """z* carrying the backward's forward-mode tangent (and its reverse-mode gradient when grad
    is enabled), for an f whose output carries tangents."""
    if strategy.unrolls_solver or strategy.reads_solver_state:
        raise NotImplementedError(
            f"forward-mode AD through backward={strategy.name!r} is not supported (its tangent "
            "would need the forward solver's own iterations); use 'implicit', 'phantom' or "
            "'one_step'"
        )
    out = strategy.attach(f, sol.z, sol, on_failure)
    if not isinstance(strategy, ImplicitOptions):
        return out  # phantom/one-step: the tangent of their own steps from z*
    direct = tangent_of(out)  # ∂f/∂θ·θ̇ at z*: z* itself enters f without a tangent
    tol, max_iter = strategy.tol, strategy.max_iter  # resolved: attach has checked them
    if direct is None or tol is None or max_iter is None:
        return out
    z_star = sol.z.detach()

    def tangent_map(v: torch.Tensor) -> torch.Tensor:  # v ↦ J v + ∂f/∂θ·θ̇
        out = tangent_of(f(forward_ad.make_dual(z_star, v)))
        return torch.zeros_like(v) if out is None else out

    with torch.no_grad():
        tangent = iterate(
            make_solver(strategy.solver),
            tangent_map,
            direct,
            tol=tol,
            max_iter=max_iter,
            stop_mode=strategy.stop_mode,
        )
    report_failure(tangent, on_failure, "implicit forward-mode (tangent) solve")
    return forward_ad.make_dual(forward_ad.unpack_dual(out).primal, tangent.z)
