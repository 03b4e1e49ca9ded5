"""The DEQ layer: an ``nn.Module`` around :func:`~deqkit.fixed_point` with the toolkit hooks."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from ._compat import pytree
from ._sampling import sample_points
from ._validate import check_bool, check_choice, check_float, check_int
from .backward import Backward, make_backward
from .core import (
    DEFAULTS,
    STOP_SCOPES,
    BackwardName,
    FailurePolicy,
    SolverName,
    StopMode,
    StopScope,
    check_compatible,
)
from .dropout import reset_dropout
from .functional import _check_common, _fixed_point, fixed_point, solve
from .losses import skip_loss
from .norm import cached_weights
from .pretrain import unroll
from .regularize import jacobian_penalty
from .solvers import Solution, Solver, make_solver

# solve and fixed_point live in deqkit.functional; importing them from here keeps working.
__all__ = ["DEQ", "fixed_point", "solve"]


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
        tol, max_iter, stop_mode, on_failure, stop_scope: as in :func:`solve`
            (``stop_scope="batch"`` for a cell that couples samples, e.g. BatchNorm).
        eval_max_iter: iteration budget in eval mode (defaults to ``max_iter``).
        init: optional module proposing z0 from x when the caller passes none (Skip-DEQ);
            ``sol.outputs.skip_loss`` then holds the mean of (z0 − z*)² to train it.
        n_states: k > 1 returns k states along the solver path in ``sol.outputs.states`` for
            :func:`~deqkit.fixed_point_correction`; the last is z itself.
        jac_reg_prob: in training mode, the probability per call of computing the Jacobian
            penalty (:func:`~deqkit.jacobian_penalty` at z*) into ``sol.outputs.jac_loss`` (a
            zero tensor when not drawn; None in eval mode, without grad, or when 0).
        jac_reg_vecs: Hutchinson probe vectors for the penalty.

    The initial state, when ``z0`` is not given, is ``init(x)``, else ``cell.initial_state(x)``
    if the cell defines it, else zeros shaped like ``x``. Each call resets the variational
    dropout masks inside and evaluates normalised weights once (see :mod:`deqkit.norm`).
    :meth:`pretrain` switches to an explicit weight-tied unroll, :meth:`tracing` records
    per-iteration residuals for a while. The solver and backward are checked together here
    (``backward="shine"`` needs ``solver="broyden"``).

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
        solver: SolverName | Solver = DEFAULTS["solver"],
        backward: BackwardName | Backward = DEFAULTS["backward"],
        *,
        tol: float = DEFAULTS["tol"],
        max_iter: int = DEFAULTS["max_iter"],
        stop_mode: StopMode = DEFAULTS["stop_mode"],
        eval_max_iter: int | None = None,
        on_failure: FailurePolicy = DEFAULTS["on_failure"],
        trace: bool = False,
        init: nn.Module | None = None,
        n_states: int = 1,
        jac_reg_prob: float = 0.0,
        jac_reg_vecs: int = 1,
        stop_scope: StopScope = DEFAULTS["stop_scope"],
    ):
        super().__init__()
        if not callable(cell):
            raise TypeError(f"cell must be callable, got {type(cell).__name__}")
        if init is not None and not callable(init):
            raise TypeError(f"init must be callable, got {type(init).__name__}")
        self.cell = cell
        self.solver = make_solver(solver)
        self.backward = make_backward(backward)
        check_compatible(self.solver, self.backward)
        _check_common(tol, max_iter, stop_mode, on_failure, trace)
        if eval_max_iter is not None:
            check_int("eval_max_iter", eval_max_iter, minimum=1)
        sample_points(n_states, min(max_iter, eval_max_iter or max_iter))
        self.tol, self.max_iter, self.stop_mode = float(tol), max_iter, stop_mode
        self.stop_scope = check_choice("stop_scope", stop_scope, STOP_SCOPES)
        self.eval_max_iter = eval_max_iter
        self.on_failure, self.trace = on_failure, trace
        self.init = init
        self.n_states = n_states
        self.jac_reg_prob = check_float("jac_reg_prob", jac_reg_prob, minimum=0.0, maximum=1.0)
        self.jac_reg_vecs = check_int("jac_reg_vecs", jac_reg_vecs, minimum=1)
        self.pretrain_steps = 0

    def pretrain(self, steps: int) -> DEQ:
        """Unroll the cell ``steps`` times explicitly instead of solving (0: solve again).

        Returns the layer itself, like ``.train()``.

        >>> import deqkit as dk
        >>> deq = dk.DEQ(lambda z, x: 0.5 * z + x).pretrain(3)
        >>> z, sol = deq(torch.ones(1, 1))  # 0.5 * (0.5 * (0.5 * 0 + 1) + 1) + 1
        >>> z.item(), sol.nfev
        (1.75, 3)
        """
        check_int("steps", steps, minimum=0)
        if steps:
            sample_points(self.n_states, steps)
        self.pretrain_steps = steps
        return self

    @contextlib.contextmanager
    def tracing(self, enabled: bool = True) -> Iterator[DEQ]:
        """Within the block, record (or not) per-iteration residuals in ``Solution.trace``;
        the previous setting comes back afterwards.

        >>> import deqkit as dk
        >>> deq = dk.DEQ(lambda z, x: 0.5 * z + x)
        >>> with deq.tracing():
        ...     z, sol = deq(torch.ones(1, 1))
        >>> sol.trace is not None, deq.trace
        (True, False)
        """
        check_bool("enabled", enabled)
        saved, self.trace = self.trace, enabled
        try:
            yield self
        finally:
            self.trace = saved

    @contextlib.contextmanager
    def pretraining(self, steps: int) -> Iterator[DEQ]:
        """Within the block, unroll ``steps`` times instead of solving (see :meth:`pretrain`);
        the previous setting comes back afterwards.

        >>> import deqkit as dk
        >>> deq = dk.DEQ(lambda z, x: 0.5 * z + x)
        >>> with deq.pretraining(2):
        ...     z, sol = deq(torch.ones(1, 1))
        >>> sol.nfev, deq.pretrain_steps
        (2, 0)
        """
        saved = self.pretrain_steps
        self.pretrain(steps)
        try:
            yield self
        finally:
            self.pretrain_steps = saved

    @contextlib.contextmanager
    def budget(self, max_iter: int, *, eval_max_iter: int | None = None) -> Iterator[DEQ]:
        """Within the block, training-mode solves are capped at ``max_iter`` iterations (checked
        like the constructor's: at least 1 and not below ``n_states``), and eval-mode solves at
        ``eval_max_iter`` when it is given (else they keep the layer's ``eval_max_iter``, or
        ``max_iter`` when that is unset); the previous budgets come back afterwards.

        >>> import deqkit as dk
        >>> deq = dk.DEQ(lambda z, x: 0.5 * z + x, "fixed_point", tol=1e-12, max_iter=40,
        ...              eval_max_iter=50, on_failure="ignore")
        >>> with deq.budget(3):
        ...     z, sol = deq(torch.ones(1, 1))
        >>> int(sol.nstep.max()), deq.max_iter
        (3, 40)
        >>> with deq.eval().budget(3, eval_max_iter=5):
        ...     z, sol = deq(torch.ones(1, 1))
        >>> int(sol.nstep.max()), deq.eval_max_iter
        (5, 50)
        >>> with deq.budget(0):
        ...     pass
        Traceback (most recent call last):
        ...
        ValueError: max_iter must be >= 1, got 0
        """
        check_int("max_iter", max_iter, minimum=1)
        sample_points(self.n_states, max_iter)
        if eval_max_iter is not None:
            check_int("eval_max_iter", eval_max_iter, minimum=1)
            sample_points(self.n_states, eval_max_iter)
        saved = self.max_iter, self.eval_max_iter
        self.max_iter = max_iter
        if eval_max_iter is not None:
            self.eval_max_iter = eval_max_iter
        try:
            yield self
        finally:
            self.max_iter, self.eval_max_iter = saved

    @contextlib.contextmanager
    def solving_with(self, solver: SolverName | Solver) -> Iterator[DEQ]:
        """Within the block, solves (training and eval) use ``solver`` (a name or a solver
        object; checked against the layer's backward like the constructor's); the previous
        solver comes back afterwards.

        >>> import deqkit as dk
        >>> deq = dk.DEQ(lambda z, x: 0.5 * z + x, solver="anderson")
        >>> with deq.solving_with("fixed_point"):
        ...     z, sol = deq(torch.ones(1, 1))
        >>> deq.solver.name
        'anderson'
        >>> with dk.DEQ(lambda z, x: z, solver="broyden", backward="shine").solving_with("anderson"):
        ...     pass
        Traceback (most recent call last):
        ...
        ValueError: backward 'shine' reads the forward solver's state of ('broyden',); got solver 'anderson'
        """  # noqa: E501
        new = make_solver(solver)
        check_compatible(new, self.backward)
        saved, self.solver = self.solver, new
        try:
            yield self
        finally:
            self.solver = saved

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
            proposed = z0 is None and self.init is not None
            if z0 is None:
                z0 = self.initial_state(x)
            else:
                _check_batch(z0, x)

            def f(z):
                return self.cell(z, x, *args, **kwargs)

            if self.pretrain_steps:
                z, sol = unroll(
                    f, z0, self.pretrain_steps, tol=self.tol, stop_mode=self.stop_mode,
                    n_states=self.n_states,
                )  # fmt: skip
                z_star = pytree.tree_map(torch.Tensor.detach, z)
            else:
                budget = self.max_iter
                if not self.training and self.eval_max_iter is not None:
                    budget = self.eval_max_iter
                z, sol, z_star = _fixed_point(
                    f,
                    z0,
                    self.solver,
                    self.backward,
                    tol=self.tol,
                    max_iter=budget,
                    stop_mode=self.stop_mode,
                    on_failure=self.on_failure,
                    trace=self.trace,
                    divergence_ratio=DEFAULTS["divergence_ratio"],
                    n_states=self.n_states,
                    stop_scope=self.stop_scope,
                )
            terms: dict[str, Any] = {}
            # An empty batch has no samples to penalise: zero terms, not the NaN of a mean of none.
            empty = sol.converged.numel() == 0
            if proposed:
                terms["skip_loss"] = (
                    torch.zeros((), device=_device(z_star)) if empty else skip_loss(z0, z_star)
                )
            if self.jac_reg_prob > 0 and self.training and torch.is_grad_enabled():
                draw = torch.rand(()).item() < self.jac_reg_prob
                terms["jac_loss"] = (
                    jacobian_penalty(f, z_star, vecs=self.jac_reg_vecs)
                    if draw and not empty
                    else torch.zeros((), device=_device(z_star))
                )
            if terms:
                sol = dataclasses.replace(sol, outputs=dataclasses.replace(sol.outputs, **terms))
            return z, sol

    def extra_repr(self) -> str:
        text = (
            f"solver={self.solver}, backward={self.backward}, tol={self.tol:g}, "
            f"max_iter={self.max_iter}, stop_mode={self.stop_mode!r}"
        )
        if self.stop_scope != DEFAULTS["stop_scope"]:
            text += f", stop_scope={self.stop_scope!r}"
        if self.n_states > 1:
            text += f", n_states={self.n_states}"
        if self.jac_reg_prob:
            text += f", jac_reg_prob={self.jac_reg_prob:g}"
        if self.pretrain_steps:
            text += f", pretrain_steps={self.pretrain_steps}"
        return text


def _device(state: Any) -> torch.device:
    return pytree.tree_leaves(state)[0].device
