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
uses a non-leaf tensor from outside (an encoder's output), the node names it as an input (see
below) and refuses ``create_graph``; when such a tensor reaches f outside a torch function, or
f's output carries forward-mode tangents, the hook form is used (which refuses it too).

**f's own graph, cut from the past.** f(z*) is evaluated once under :class:`CutHistory`, which
hands f a detached, grad-requiring copy of every non-leaf tensor made before the solve (an
encoder's output, the previous state h_{t−1} of a recurrent DEQ). The graph the adjoint's
vector–Jacobian products walk is then f's own: without the cut, PyTorch's engine visits every
node reachable from f(z*) on each product, the whole history of h_{t−1} included, so the
backward of a T-step recurrence cost O(T²). The copies are inputs of the node, and the gradient
it returns for them flows into their history once, after the adjoint solve. Such a node gives
first derivatives only (naming a non-leaf input while differentiating again would count its
history's path to shared leaves twice).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.autograd import forward_ad
from torch.overrides import TorchFunctionMode

from ._compat import node_sequence_nr
from .solvers import iterate, make_solver
from .solvers._report import report_failure

__all__ = ["CutHistory", "graph_leaves", "implicit_node"]


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


class CutHistory(TorchFunctionMode):
    """While active, every torch function sees a detached copy (requiring grad) of each
    non-leaf tensor argument made before sequence number ``start`` (``cut`` maps each original's
    id to ``(original, copy)``). Tensors carrying forward-mode tangents are left alone (a copy
    would drop the tangent), as are tensors reaching f outside torch functions (a custom
    ``autograd.Function``'s inputs): :func:`graph_leaves` then finds the old node.

    >>> h = torch.ones(2, requires_grad=True) * 2  # made before: a non-leaf with a history
    >>> from deqkit._compat import next_sequence_nr
    >>> with CutHistory(next_sequence_nr()) as cut:
    ...     y = (3 * h).sum()
    >>> [type(n).__name__ for n, _ in y.grad_fn.next_functions[0][0].next_functions]
    ['AccumulateGrad', 'NoneType']
    >>> len(cut.cut)
    1
    """

    def __init__(self, start: int):
        super().__init__()
        self.start = start
        self.cut: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._original: dict[int, torch.Tensor] = {}  # id(copy) -> the tensor it copies
        # id(t) -> (t, what f sees): each tensor is judged once (holding t keeps its id unique).
        self._seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _copy(self, t: torch.Tensor) -> torch.Tensor:
        hit = self._seen.get(id(t))
        if hit is not None:
            return hit[1]
        seen = t
        node = t.grad_fn
        if (
            node is not None
            and node_sequence_nr(node) < self.start
            and forward_ad.unpack_dual(t).tangent is None  # a copy would drop a tangent
        ):
            seen = t.detach().requires_grad_()
            self.cut[id(t)] = (t, seen)
            self._original[id(seen)] = t
        self._seen[id(t)] = (t, seen)
        return seen

    def _map(self, obj: Any) -> Any:
        # A light tree map (torch functions take tensors, lists and tuples of them); pytree's
        # map cost 2/3 of attach. A container is rebuilt only when an element changed.
        if isinstance(obj, torch.Tensor):
            return self._copy(obj)
        kind = type(obj)
        if kind is tuple or kind is list:
            new = [self._map(item) for item in obj]
            for a, b in zip(new, obj, strict=True):
                if a is not b:
                    return kind(new)
        elif kind is dict:
            new_dict = {key: self._map(value) for key, value in obj.items()}
            for key, value in obj.items():
                if new_dict[key] is not value:
                    return new_dict
        return obj

    @torch.compiler.disable  # run eagerly inside a compiled f (dynamo's guards on it failed)
    def __torch_function__(self, func, types, args=(), kwargs=None):
        seen, changed = self._seen, None
        for i, arg in enumerate(args):  # the common case inline: a flat tuple of tensors
            if isinstance(arg, torch.Tensor):
                hit = seen.get(id(arg))
                new = hit[1] if hit is not None else self._copy(arg)
            elif type(arg) is tuple or type(arg) is list:
                new = self._map(arg)
            else:
                continue
            if new is not arg:
                changed = changed or list(args)
                changed[i] = new
        if changed is not None:
            args = tuple(changed)
        out = func(*args, **(self._map(kwargs) if kwargs else {}))
        if isinstance(out, torch.Tensor):  # made inside f: never cut, no need to look again
            seen[id(out)] = (out, out)
        return out

    def split(self, leaves: list) -> tuple[list, list, list]:
        """(true leaves, originals, their copies) of the leaves ``graph_leaves`` found."""
        plain = [t for t in leaves if id(t) not in self._original]
        copies = [t for t in leaves if id(t) in self._original]
        return plain, [self._original[id(t)] for t in copies], copies


class _Context:
    """What the node's backward needs: f, its graph at the detached z*, the adjoint options,
    and the cut inputs (``outer`` non-leaf tensors, their detached ``copies`` in f's graph)."""

    def __init__(self, f, fz, z_leaf, leaves, opts, solution, on_failure, outer=(), copies=()):
        # fz (f's graph) is held only until the node's forward saves it for backward, so that a
        # backward without retain_graph frees f's graph, as it frees every other node's.
        self.f, self.fz, self.z_leaf, self.leaves = f, fz, z_leaf, leaves
        self.opts, self.solution, self.on_failure = opts, solution, on_failure
        self.outer, self.copies = list(outer), list(copies)
        # Set while the backward takes the partial uᵀ ∂f/∂θ at an attached z*: that z*'s node
        # must then pass nothing on (the path through z* is the adjoint's job), yet stay
        # differentiable for the next derivative.
        self.blocked = False

    def copy(self, fz: torch.Tensor) -> _Context:
        return _Context(
            self.f, fz, self.z_leaf, self.leaves, self.opts, self.solution, self.on_failure,
            self.outer, self.copies,
        )  # fmt: skip

    def solve_adjoint(self, fz: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        def adjoint_map(u: torch.Tensor) -> torch.Tensor:
            (vjp,) = torch.autograd.grad(fz, self.z_leaf, u, retain_graph=True)
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


#: Why ``create_graph=True`` is refused when f uses a non-leaf tensor from outside.
NON_LEAF = (
    "; second derivatives need f to use only leaf tensors besides z, and this f uses a "
    "non-leaf tensor made before the solve, e.g. an encoder's output"
)


class _ImplicitNode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, context: _Context, *inputs):
        ctx.context = context
        fz, context.fz = context.fz, None
        ctx.save_for_backward(fz)  # freed by a backward without retain_graph
        return context.z_leaf.detach().clone()  # z* itself: the state the solution describes

    @staticmethod
    def backward(ctx, grad):
        context: _Context = ctx.context
        if context.blocked:
            return (None,) * (1 + len(context.leaves) + len(context.outer))
        if context.outer:
            from .backward import refuse_create_graph

            refuse_create_graph("implicit", NON_LEAF)
        (fz_star,) = ctx.saved_tensors
        u = context.solve_adjoint(fz_star, grad)
        if not torch.is_grad_enabled():  # a first derivative: the recorded f graph suffices
            grads = torch.autograd.grad(
                fz_star, context.leaves + context.copies, u, retain_graph=True,
                allow_unused=True,
            )  # fmt: skip
            return (None, *grads)
        # create_graph=True: rebuild the gradient from differentiable pieces.
        inner = context.copy(fz_star)
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
    on_failure: str, outer: Sequence = (), copies: Sequence = (),
) -> torch.Tensor:  # fmt: skip
    """f(z*) as a node whose gradient is the implicit one: differentiable once more when f
    uses only leaves; with cut inputs (``outer``, seen by f as ``copies``), first order."""
    context = _Context(f, fz, z_leaf, leaves, opts, solution, on_failure, outer, copies)
    return _ImplicitNode.apply(context, *leaves, *context.outer)
