"""The three entry points: ``solve`` (no autograd), ``fixed_point`` (differentiable), ``DEQ``."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from ._compat import pytree
from ._sampling import attach_states, sample_points
from ._validate import check_bool, check_choice, check_float, check_int
from .backward import Backward, make_backward
from .core import (
    DEFAULTS,
    FAILURE_POLICIES,
    STOP_MODES,
    BackwardName,
    FailurePolicy,
    SolverName,
    StopMode,
    check_compatible,
)
from .dropout import reset_dropout
from .losses import skip_loss
from .norm import cached_weights
from .pretrain import unroll
from .regularize import jacobian_penalty
from .solvers import Solution, Solver, iterate, make_solver
from .solvers._report import report_failure
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

    plain = (
        not cast and spec.treespec.is_leaf() and spec.dtypes[0] in (torch.float32, torch.float64)
    )
    if not plain:
        return flat_f
    shape, dtype = spec.shapes[0], spec.dtypes[0]

    def flat_tensor_f(z: torch.Tensor) -> torch.Tensor:
        # A plain float32/64 tensor state (the common case): no pytree walk per call.
        out = f(z.reshape(shape))
        if type(out) is not torch.Tensor or out.shape != shape or out.dtype != dtype:
            return spec.flatten_like(out, "f(z)")  # other types are checked, or rejected, there
        return out.reshape(z.shape)

    return flat_tensor_f


def _prepare(z0: Any, what: str = "z0") -> tuple[torch.Tensor, StateSpec]:
    flat, spec = flatten(z0, what)
    if not bool(torch.isfinite(flat).all()):
        raise ValueError(f"{what} contains NaN or Inf")
    return flat.detach(), spec


def _check_common(tol, max_iter, stop_mode, on_failure, trace):
    check_float("tol", tol, minimum=0.0, strict_min=True)
    check_int("max_iter", max_iter, minimum=1)
    check_choice("stop_mode", stop_mode, STOP_MODES)
    check_choice("on_failure", on_failure, FAILURE_POLICIES)
    check_bool("trace", trace)


def solve(
    f: Callable[[Any], Any],
    z0: Any,
    solver: SolverName | Solver = DEFAULTS["solver"],
    *,
    tol: float = DEFAULTS["tol"],
    max_iter: int = DEFAULTS["max_iter"],
    stop_mode: StopMode = DEFAULTS["stop_mode"],
    on_failure: FailurePolicy = DEFAULTS["on_failure"],
    trace: bool = False,
    divergence_ratio: float = DEFAULTS["divergence_ratio"],
    keep_state: bool = False,
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
        keep_state: put the solver's final state in ``Solution.state`` (for Broyden its
            inverse-Jacobian estimate, :class:`~deqkit.solvers.BroydenState`).

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
            keep_state=keep_state,
        )
    sol = dataclasses.replace(sol, z=spec.unflatten(sol.z))
    report_failure(sol, on_failure, "forward solve")
    return sol


def fixed_point(
    f: Callable[[Any], Any],
    z0: Any,
    solver: SolverName | Solver = DEFAULTS["solver"],
    backward: BackwardName | Backward = DEFAULTS["backward"],
    *,
    tol: float = DEFAULTS["tol"],
    max_iter: int = DEFAULTS["max_iter"],
    stop_mode: StopMode = DEFAULTS["stop_mode"],
    on_failure: FailurePolicy = DEFAULTS["on_failure"],
    trace: bool = False,
    divergence_ratio: float = DEFAULTS["divergence_ratio"],
    n_states: int = 1,
) -> tuple[Any, Solution]:
    """Differentiable fixed point: z* = f(z*) with gradients to everything f uses, never z0.

    Takes the arguments of :func:`solve` plus ``backward`` ("implicit", "phantom", "one_step",
    "unrolled" or an object such as ``dk.Implicit(tol=1e-8)`` or ``dk.Shine()``). Gradients are
    recorded whenever autograd is enabled (training or eval mode alike). ``n_states=k > 1``
    fills ``solution.outputs.states`` with k states along the solver path for
    :func:`~deqkit.fixed_point_correction`; the last is the returned z itself.

    Returns:
        ``(z, solution)``: ``z`` has the structure of ``z0`` and carries the gradient.

    >>> import deqkit as dk
    >>> x = torch.tensor([[2.0]], requires_grad=True)
    >>> z, sol = dk.fixed_point(lambda z: 0.5 * z + x, torch.zeros(1, 1), tol=1e-10)
    >>> z.backward()
    >>> round(z.item(), 6), round(x.grad.item(), 6)
    (4.0, 2.0)
    """
    z, sol, _ = _fixed_point(
        f, z0, solver, backward, tol=tol, max_iter=max_iter, stop_mode=stop_mode,
        on_failure=on_failure, trace=trace, divergence_ratio=divergence_ratio, n_states=n_states,
    )  # fmt: skip
    return z, sol


def _fixed_point(
    f, z0, solver, backward, *, tol, max_iter, stop_mode, on_failure, trace, divergence_ratio,
    n_states,
) -> tuple[Any, Solution, Any]:  # fmt: skip
    """:func:`fixed_point`, also returning the solver's detached z* (in z0's structure)."""
    _check_common(tol, max_iter, stop_mode, on_failure, trace)
    strategy = make_backward(backward)
    solver = make_solver(solver)
    check_compatible(solver, strategy)
    flat0, spec = _prepare(z0)
    device_type = flat0.device.type
    flat_f = _flat_map(f, spec, device_type)
    points = sample_points(n_states, max_iter)
    record = torch.is_grad_enabled() and strategy.unrolls_solver
    with torch.set_grad_enabled(record), torch.autocast(device_type, enabled=False):
        sol = iterate(
            solver,
            flat_f,
            flat0,
            tol=tol,
            max_iter=max_iter,
            stop_mode=stop_mode,
            trace=trace,
            divergence_ratio=divergence_ratio,
            sample_at=points[:-1],
            keep_state=strategy.reads_solver_state,
        )
    report_failure(sol, on_failure, "forward solve")
    z_flat = sol.z
    with torch.autocast(device_type, enabled=False):
        if torch.is_grad_enabled() and not strategy.unrolls_solver:
            z_flat = strategy.attach(flat_f, sol.z, sol, on_failure)
        if n_states > 1:
            sampled = sol.outputs.states or []
            states = attach_states(strategy, flat_f, sampled, z_flat, n_states, sol, on_failure)
    z_out = spec.unflatten(z_flat)
    outputs = sol.outputs
    if n_states > 1:
        outputs = dataclasses.replace(
            outputs, states=[z_out if s is z_flat else spec.unflatten(s) for s in states]
        )
    z_star = spec.unflatten(sol.z.detach())
    # One Solution, built once: its z is the very z returned (with the backward's gradient).
    return z_out, dataclasses.replace(sol, z=z_out, outputs=outputs), z_star


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
                )
            terms: dict[str, Any] = {}
            if proposed:
                terms["skip_loss"] = skip_loss(z0, z_star)
            if self.jac_reg_prob > 0 and self.training and torch.is_grad_enabled():
                draw = torch.rand(()).item() < self.jac_reg_prob
                terms["jac_loss"] = (
                    jacobian_penalty(f, z_star, vecs=self.jac_reg_vecs)
                    if draw
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
        if self.n_states > 1:
            text += f", n_states={self.n_states}"
        if self.jac_reg_prob:
            text += f", jac_reg_prob={self.jac_reg_prob:g}"
        if self.pretrain_steps:
            text += f", pretrain_steps={self.pretrain_steps}"
        return text


def _device(state: Any) -> torch.device:
    return pytree.tree_leaves(state)[0].device
