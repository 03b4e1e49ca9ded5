"""The implicit backward as a differentiable node, so second derivatives are exact.

The hook form of :class:`~deqkit.Implicit` routes the adjoint u into the graph of f(z*) taken
at a *detached* z*, and solves u without recording it: a second derivative then misses the
terms through z* and u. When every tensor f differentiates (apart from z) is a leaf — its
parameters, a leaf input — the backward can instead be a custom autograd node with those leaves
as inputs. Its backward, under ``create_graph=True``, records

* z* again as this very node (its derivative is exact, to any order this node supports),
* f at that attached z*, and the adjoint u attached as the fixed point of
  h(u) = g + Jᵀu (its own implicit step, so du is exact to first order),
* uᵀ ∂f/∂θ from those,

so the gradient it returns is itself differentiable: exact second derivatives. A third
derivative reaches the inner adjoint step under ``create_graph`` and is refused there. When f
uses a non-leaf tensor from outside (an encoder's output), the node cannot name it and the hook
form is used (which refuses ``create_graph``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ._compat import node_sequence_nr
from .solvers import iterate, make_solver
from .solvers._report import report_failure

__all__ = ["graph_leaves", "implicit_node"]


def graph_leaves(out: torch.Tensor, z_leaf: torch.Tensor, start: int) -> list | None:
    """The leaf tensors ``out`` depends on apart from ``z_leaf``, walking only nodes made since
    sequence number ``start`` (f's own graph); None if f reaches an older non-leaf node. (Such
    a tensor cannot simply be named as an input of the node: its own history may lead to the
    same leaves, which would then receive that path twice.)"""
    leaves: dict[int, torch.Tensor] = {}
    seen: set[int] = set()
    stack = [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if isinstance(variable, torch.Tensor):  # AccumulateGrad: a leaf
            if variable is not z_leaf:
                leaves[id(variable)] = variable
            continue
        if node_sequence_nr(node) < start:
            return None  # a non-leaf tensor made before f ran: the node could not name it
        stack.extend(fn for fn, _ in node.next_functions)
    return list(leaves.values())


class _Context:
    """What the node's backward needs: f, its graph at the detached z*, the adjoint options."""

    def __init__(self, f, fz, z_leaf, leaves, opts, solution, on_failure):
        self.f, self.fz, self.z_leaf, self.leaves = f, fz, z_leaf, leaves
        self.opts, self.solution, self.on_failure = opts, solution, on_failure
        # Set while the backward takes the partial uᵀ ∂f/∂θ at an attached z*: that z*'s node
        # must then pass nothing on (the path through z* is the adjoint's job), yet stay
        # differentiable for the next derivative.
        self.blocked = False

    def copy(self) -> _Context:
        return _Context(
            self.f, self.fz, self.z_leaf, self.leaves, self.opts, self.solution, self.on_failure
        )

    def solve_adjoint(self, grad: torch.Tensor) -> torch.Tensor:
        def adjoint_map(u: torch.Tensor) -> torch.Tensor:
            (vjp,) = torch.autograd.grad(self.fz, self.z_leaf, u, retain_graph=True)
            return grad + vjp

        with torch.no_grad():
            back = iterate(
                make_solver(self.opts.solver),
                adjoint_map,
                grad.detach(),
                tol=self.opts.tol,
                max_iter=self.opts.max_iter,
                stop_mode=self.opts.stop_mode,
                stop_scope=self.solution.stop_scope,  # a coupled f couples the adjoint too
            )
        self.solution._set_backward(back)
        report_failure(back, self.on_failure, "implicit backward (adjoint) solve")
        return back.z


class _ImplicitNode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, context: _Context, *leaves):
        ctx.context = context
        return context.fz.detach().clone()

    @staticmethod
    def backward(ctx, grad):
        context: _Context = ctx.context
        if context.blocked:
            return (None,) * (1 + len(context.leaves))
        u = context.solve_adjoint(grad)
        if not torch.is_grad_enabled():  # a first derivative: the recorded f graph suffices
            grads = torch.autograd.grad(
                context.fz, context.leaves, u, retain_graph=True, allow_unused=True
            )
            return (None, *grads)
        # create_graph=True: rebuild the gradient from differentiable pieces.
        inner = context.copy()
        z_att = _ImplicitNode.apply(inner, *context.leaves)
        fz = context.f(z_att)

        def adjoint_step(v: torch.Tensor) -> torch.Tensor:  # h(v) = g + Jᵀv at the attached z*
            (vjp,) = torch.autograd.grad(fz, z_att, v, create_graph=True)
            return grad + vjp

        u_att = _attach_linear(adjoint_step, u, context)
        inner.blocked = True
        try:
            grads = torch.autograd.grad(
                fz, context.leaves, u_att, create_graph=True, allow_unused=True
            )
        finally:
            inner.blocked = False
        return (None, *grads)


def _attach_linear(h: Callable, u_star: torch.Tensor, context: _Context) -> torch.Tensor:
    """u* carrying the implicit derivative of u = h(u) (one more implicit step, first order)."""
    from .backward import refuse_create_graph

    u_leaf = u_star.detach().requires_grad_()
    hu = h(u_leaf)

    def adjoint(w: torch.Tensor | None) -> torch.Tensor | None:
        if w is None:
            return None
        refuse_create_graph("implicit", "; third derivatives are not supported")

        def step(v: torch.Tensor) -> torch.Tensor:
            (vjp,) = torch.autograd.grad(hu, u_leaf, v, retain_graph=True)
            return w + vjp

        with torch.no_grad():
            back = iterate(
                make_solver(context.opts.solver),
                step,
                w,
                tol=context.opts.tol,
                max_iter=context.opts.max_iter,
                stop_mode=context.opts.stop_mode,
                stop_scope=context.solution.stop_scope,
            )
        report_failure(back, context.on_failure, "implicit second-order (adjoint) solve")
        return back.z

    out = hu.view_as(hu)
    out.register_hook(adjoint)
    return out


def implicit_node(
    f: Callable, fz: torch.Tensor, z_leaf: torch.Tensor, leaves: list, opts: Any, solution: Any,
    on_failure: str,
) -> torch.Tensor:  # fmt: skip
    """f(z*) as a node whose gradient is the implicit one, differentiable once more."""
    context = _Context(f, fz, z_leaf, leaves, opts, solution, on_failure)
    return _ImplicitNode.apply(context, *leaves)
