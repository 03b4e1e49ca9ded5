"""The three entry points: ``solve`` (no autograd), ``fixed_point`` (differentiable), ``DEQ``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

from ._validate import check_bool, check_choice, check_int
from .backward import FAILURE_POLICIES, Backward, make_backward, report_failure
from .dropout import reset_dropout
from .norm import cached_weights
from .solvers import DEFAULTS, Solution, Solver, iterate, make_solver
from .state import StateSpec, flatten

__all__ = ["DEQ", "fixed_point", "solve"]


def _autocast_for_f(device_type: str) -> Callable[[], contextlib.AbstractContextManager]:
    """Solver arithmetic runs outside autocast; f runs inside it again, as the caller asked."""
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        return lambda: torch.autocast(device_type, dtype=dtype)
    return contextlib.nullcontext


def _flat_map(f: Callable, spec: StateSpec, device_type: str) -> Callable:
    reenter = _autocast_for_f(device_type)
    cast = reenter is not contextlib.nullcontext

    def flat_f(z: torch.Tensor) -> torch.Tensor:
        with reenter():
            out = f(spec.unflatten(z))
        return spec.flatten_like(out, "f(z)", cast=cast)

    return flat_f


def _prepare(z0: Any, what: str = "z0") -> tuple[torch.Tensor, StateSpec]:
    flat, spec = flatten(z0, what)
    if not bool(torch.isfinite(flat).all()):
        raise ValueError(f"{what} contains NaN or Inf")
    return flat.detach(), spec


def _check_common(tol, max_iter, stop_mode, on_failure, trace):
    iterate_checks = {"tol": tol, "max_iter": max_iter, "stop_mode": stop_mode}
    check_choice("on_failure", on_failure, FAILURE_POLICIES)
    check_bool("trace", trace)
    return iterate_checks


def solve(
    f: Callable[[Any], Any],
    z0: Any,
    solver: str | Solver = DEFAULTS["solver"],
    *,
    tol: float = DEFAULTS["tol"],
    max_iter: int = DEFAULTS["max_iter"],
    stop_mode: str = DEFAULTS["stop_mode"],
    on_failure: str = "warn",
    trace: bool = False,
    divergence_ratio: float = DEFAULTS["divergence_ratio"],
) -> Solution:
    """Find z* = f(z*) without recording gradients.

    Args:
        f: maps a state (tensor or tuple/list/dict of tensors, batch in dim 0) to one of the
            same structure, shapes and dtypes.
        z0: the initial state.
        solver: "fixed_point", "anderson", "broyden", "newton_krylov" or a solver object.
        tol: per-sample tolerance on the residual chosen by ``stop_mode``.
        max_iter: iteration budget (the evaluation of f(z0) is the first iteration).
        stop_mode: "rel" (‖f(z) − z‖ / ‖f(z)‖) or "abs" (‖f(z) − z‖).
        on_failure: "warn", "raise" (:class:`SolverError`) or "ignore" when not converged.
        trace: record per-iteration residuals in ``Solution.trace``.
        divergence_ratio: stop a sample as DIVERGED once its residual exceeds this many times
            its first residual.

    Returns:
        A :class:`Solution` whose ``z`` has the structure of ``z0``.

    >>> import deqkit as dk
    >>> sol = dk.solve(lambda z: torch.tanh(0.5 * z + 1.0), torch.zeros(4, 3), tol=1e-6)
    >>> sol.status.name, sol.converged.all().item()
    ('CONVERGED', True)
    """
    _check_common(tol, max_iter, stop_mode, on_failure, trace)
    flat0, spec = _prepare(z0)
    with torch.no_grad(), torch.autocast(flat0.device.type, enabled=False):
        sol = iterate(
            make_solver(solver),
            _flat_map(f, spec, flat0.device.type),
            flat0,
            tol=tol,
            max_iter=max_iter,
            stop_mode=stop_mode,
            trace=trace,
            divergence_ratio=divergence_ratio,
        )
    sol.z = spec.unflatten(sol.z)
    report_failure(sol, on_failure, "forward solve")
    return sol


def fixed_point(
    f: Callable[[Any], Any],
    z0: Any,
    solver: str | Solver = DEFAULTS["solver"],
    backward: str | Backward = "implicit",
    *,
    tol: float = DEFAULTS["tol"],
    max_iter: int = DEFAULTS["max_iter"],
    stop_mode: str = DEFAULTS["stop_mode"],
    on_failure: str = "warn",
    trace: bool = False,
    divergence_ratio: float = DEFAULTS["divergence_ratio"],
) -> tuple[Any, Solution]:
    """Differentiable fixed point: z* = f(z*) with gradients to everything f uses, never z0.

    Takes the arguments of :func:`solve` plus ``backward`` ("implicit", "phantom", "one_step",
    "unrolled" or an object such as ``dk.Implicit(tol=1e-8)``). Gradients are recorded whenever
    autograd is enabled (training or eval mode alike).

    Returns:
        ``(z, solution)``: ``z`` has the structure of ``z0`` and carries the gradient.

    >>> import deqkit as dk
    >>> x = torch.tensor([[2.0]], requires_grad=True)
    >>> z, sol = dk.fixed_point(lambda z: 0.5 * z + x, torch.zeros(1, 1), tol=1e-10)
    >>> z.backward()
    >>> round(z.item(), 6), round(x.grad.item(), 6)
    (4.0, 2.0)
    """
    _check_common(tol, max_iter, stop_mode, on_failure, trace)
    strategy = make_backward(backward)
    flat0, spec = _prepare(z0)
    device_type = flat0.device.type
    flat_f = _flat_map(f, spec, device_type)
    record = torch.is_grad_enabled() and strategy.unrolls_solver
    with torch.set_grad_enabled(record), torch.autocast(device_type, enabled=False):
        sol = iterate(
            make_solver(solver),
            flat_f,
            flat0,
            tol=tol,
            max_iter=max_iter,
            stop_mode=stop_mode,
            trace=trace,
            divergence_ratio=divergence_ratio,
        )
    report_failure(sol, on_failure, "forward solve")
    z_flat = sol.z
    if torch.is_grad_enabled() and not strategy.unrolls_solver:
        with torch.autocast(device_type, enabled=False):
            z_flat = strategy.attach(flat_f, sol.z, sol, on_failure)
    sol.z = spec.unflatten(sol.z.detach())
    return spec.unflatten(z_flat), sol


def _check_batch(z0: Any, x: Any) -> None:
    z_leaves = [t for t in pytree.tree_leaves(z0) if isinstance(t, torch.Tensor) and t.dim()]
    x_leaves = [t for t in pytree.tree_leaves(x) if isinstance(t, torch.Tensor) and t.dim()]
    if z_leaves and x_leaves and z_leaves[0].shape[0] != x_leaves[0].shape[0]:
        raise ValueError(
            f"z0 has batch size {z_leaves[0].shape[0]} but x has batch size "
            f"{x_leaves[0].shape[0]}; dim 0 of every state leaf is the batch"
        )


class DEQ(nn.Module):
    """A deep equilibrium layer: returns z* = cell(z*, x, ...) with the chosen backward.

    Args:
        cell: a module or function called as ``cell(z, x, *args, **kwargs)``.
        solver: solver name or object (see :func:`solve`).
        backward: backward name or object (see :func:`fixed_point`).
        tol, max_iter, stop_mode, on_failure: as in :func:`solve`.
        eval_max_iter: iteration budget in eval mode (defaults to ``max_iter``).
        init: optional module proposing z0 from x when the caller passes none.

    The initial state, when ``z0`` is not given, is ``init(x)``, else ``cell.initial_state(x)``
    if the cell defines it, else zeros shaped like ``x``.

    >>> import deqkit as dk
    >>> class Cell(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.lin = torch.nn.Linear(4, 4)
    ...     def forward(self, z, x):
    ...         return torch.tanh(0.5 * self.lin(z) + x)
    >>> deq = dk.DEQ(Cell(), solver=dk.Anderson(m=5), tol=1e-6, max_iter=40)
    >>> z, sol = deq(torch.randn(8, 4))
    >>> z.shape, sol.status.name
    (torch.Size([8, 4]), 'CONVERGED')
    """

    def __init__(
        self,
        cell: Callable,
        solver: str | Solver = DEFAULTS["solver"],
        backward: str | Backward = "implicit",
        *,
        tol: float = DEFAULTS["tol"],
        max_iter: int = DEFAULTS["max_iter"],
        stop_mode: str = DEFAULTS["stop_mode"],
        eval_max_iter: int | None = None,
        on_failure: str = "warn",
        trace: bool = False,
        init: nn.Module | None = None,
    ):
        super().__init__()
        if not callable(cell):
            raise TypeError(f"cell must be callable, got {type(cell).__name__}")
        self.cell = cell
        self.solver = make_solver(solver)
        self.backward = make_backward(backward)
        _check_common(tol, max_iter, stop_mode, on_failure, trace)
        if eval_max_iter is not None:
            check_int("eval_max_iter", eval_max_iter, minimum=1)
        self.tol, self.max_iter, self.stop_mode = float(tol), max_iter, stop_mode
        self.eval_max_iter = eval_max_iter
        self.on_failure, self.trace = on_failure, trace
        self.init = init

    def initial_state(self, x: Any) -> Any:
        if self.init is not None:
            return self.init(x)
        if hasattr(self.cell, "initial_state"):
            return self.cell.initial_state(x)
        return pytree.tree_map(torch.zeros_like, x)

    def forward(self, x: Any, *args, z0: Any = None, **kwargs) -> tuple[Any, Solution]:
        # One dropout mask and one evaluation of each normalised weight per call: f must be the
        # same map at every solver iteration and in the backward.
        reset_dropout(self)
        with cached_weights(self):
            if z0 is None:
                z0 = self.initial_state(x)
            else:
                _check_batch(z0, x)
            budget = self.max_iter
            if not self.training and self.eval_max_iter is not None:
                budget = self.eval_max_iter
            return fixed_point(
                lambda z: self.cell(z, x, *args, **kwargs),
                z0,
                self.solver,
                self.backward,
                tol=self.tol,
                max_iter=budget,
                stop_mode=self.stop_mode,
                on_failure=self.on_failure,
                trace=self.trace,
            )

    def extra_repr(self) -> str:
        return (
            f"solver={self.solver}, backward={self.backward}, tol={self.tol:g}, "
            f"max_iter={self.max_iter}, stop_mode={self.stop_mode!r}"
        )
