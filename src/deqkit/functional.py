"""The functional entry points: ``solve`` (no autograd) and ``fixed_point`` (differentiable)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from ._sampling import attach_states, sample_points
from ._transforms import GuardedMap, attach_tangent, aux_pair, check_not_wrapped, split_aux
from ._validate import check_bool, check_choice, check_float, check_int
from .backward import Backward, make_backward
from .core import (
    DEFAULTS,
    FAILURE_POLICIES,
    STOP_MODES,
    BackwardName,
    FailurePolicy,
    ImplicitOptions,
    SolverName,
    StopMode,
    StopScope,
    check_compatible,
)
from .solvers import Solution, Solver, iterate, make_solver
from .solvers._report import report_failure
from .state import StateSpec, flatten

__all__ = ["fixed_point", "solve"]


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
    check_not_wrapped(z0, what)
    flat, spec = flatten(z0, what)
    if not bool(torch.isfinite(flat).all()):
        raise ValueError(f"{what} contains NaN or Inf")
    return flat.detach(), spec


def _check_common(tol, max_iter, stop_mode, on_failure, trace, has_aux=False):
    check_bool("has_aux", has_aux)
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
    stop_scope: StopScope = DEFAULTS["stop_scope"],
    has_aux: bool = False,
) -> Solution:
    """Find z* = f(z*) without recording gradients.

    Args:
        f: maps a state (tensor or tuple/list/dict of tensors, batch in dim 0) to one of the
            same structure, shapes and dtypes.
        z0: the initial state.
        solver: "fixed_point", "anderson", "broyden", "newton_krylov" or a solver object.
        tol: per-sample tolerance on the residual chosen by ``stop_mode``.
        max_iter: iteration budget (the evaluation of f(z0) is the first iteration).
        stop_mode: "rel" (‖f(z) − z‖ / ‖f(z)‖), "abs" (‖f(z) − z‖) or "mixed"
            (‖f(z) − z‖ / (1 + ‖f(z)‖): relative for large states, absolute near z* = 0).
        on_failure: "warn", "raise" (:class:`SolverError`) or "ignore" when not converged.
        trace: record per-iteration residuals in ``Solution.trace``.
        divergence_ratio: stop a sample as DIVERGED once its residual exceeds this many times
            its first residual.
        keep_state: put the solver's final state in ``Solution.state`` (for Broyden its
            inverse-Jacobian estimate, :class:`~deqkit.solvers.BroydenState`).
        stop_scope: "sample" (each sample stops when it reaches tol) or "batch" (the batch is
            solved as one system until every sample reaches tol: for f that couples samples,
            e.g. BatchNorm or batch means inside f).
        has_aux: f returns ``(state, aux)``; the solver iterates on the state and
            ``Solution.aux`` is the aux of one more evaluation of f at the returned z (None for
            an empty batch, where f is never called).

    Returns:
        A :class:`Solution` whose ``z`` has the structure of ``z0``.

    Nothing is differentiated, in reverse or in forward mode (tangents of dual tensors f
    uses are dropped); ``torch.func`` transforms are refused with a ``NotImplementedError``.
    An empty batch (dim 0 of size 0) returns an empty CONVERGED Solution without calling f.

    >>> import deqkit as dk
    >>> sol = dk.solve(lambda z: torch.tanh(0.5 * z + 1.0), torch.zeros(4, 3), tol=1e-6)
    >>> sol.status.name, sol.converged.all().item()
    ('CONVERGED', True)
    """
    _check_common(tol, max_iter, stop_mode, on_failure, trace, has_aux)
    flat0, spec = _prepare(z0)
    with torch.no_grad(), torch.autocast(flat0.device.type, enabled=False):
        sol = iterate(
            make_solver(solver),
            GuardedMap(_flat_map(split_aux(f, has_aux), spec, flat0.device.type)),
            flat0,
            tol=tol,
            max_iter=max_iter,
            stop_mode=stop_mode,
            trace=trace,
            divergence_ratio=divergence_ratio,
            keep_state=keep_state,
            stop_scope=stop_scope,
        )
    z = spec.unflatten(sol.z)
    with torch.no_grad():
        aux = _aux_at(f, z, flat0.shape[0]) if has_aux else None
    sol = dataclasses.replace(sol, z=z, aux=aux)
    report_failure(sol, on_failure, "forward solve")
    return sol


def _aux_at(f: Callable, z: Any, batch: int) -> Any:
    """The aux of f(z) under has_aux; not evaluated for an empty batch (f is never called)."""
    return aux_pair(f(z))[1] if batch else None


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
    stop_scope: StopScope = DEFAULTS["stop_scope"],
    has_aux: bool = False,
) -> tuple[Any, Solution]:
    """Differentiable fixed point: z* = f(z*) with gradients to everything f uses, never z0.

    Takes the arguments of :func:`solve` plus ``backward`` ("implicit", "phantom", "one_step",
    "unrolled" or an object such as ``dk.Implicit(tol=1e-8)`` or ``dk.Shine()``). Gradients are
    recorded whenever autograd is enabled (training or eval mode alike). ``n_states=k > 1``
    fills ``solution.outputs.states`` with k states along the solver path for
    :func:`~deqkit.fixed_point_correction`; the last is the returned z itself. With
    ``has_aux=True`` f returns ``(state, aux)`` and ``solution.aux`` is the aux of one more
    evaluation of f at the returned z, so it carries gradients through z* as well.

    Forward-mode AD (``torch.autograd.forward_ad``) works with the implicit backward (the exact
    tangent (I − J)⁻¹ ∂f/∂θ·θ̇, from a tangent fixed-point solve with the adjoint's solver and
    tolerance) and with phantom/one-step (the tangent of their steps); the unrolled and SHINE
    backwards refuse it, and ``torch.func`` transforms are refused, with a
    ``NotImplementedError``. Higher derivatives: see :class:`~deqkit.Implicit`.

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
        stop_scope=stop_scope, has_aux=has_aux,
    )  # fmt: skip
    return z, sol


def _fixed_point(
    f, z0, solver, backward, *, tol, max_iter, stop_mode, on_failure, trace, divergence_ratio,
    n_states, stop_scope=DEFAULTS["stop_scope"], has_aux=False,
) -> tuple[Any, Solution, Any]:  # fmt: skip
    """:func:`fixed_point`, also returning the solver's detached z* (in z0's structure)."""
    _check_common(tol, max_iter, stop_mode, on_failure, trace, has_aux)
    strategy = make_backward(backward)
    if isinstance(strategy, ImplicitOptions):  # an adjoint tol/max_iter left at None: the forward's
        strategy = strategy.for_forward(tol, max_iter)
    solver = make_solver(solver)
    check_compatible(solver, strategy)
    flat0, spec = _prepare(z0)
    device_type = flat0.device.type
    flat_f = _flat_map(split_aux(f, has_aux), spec, device_type)
    guarded = GuardedMap(flat_f)
    points = sample_points(n_states, max_iter)
    record = torch.is_grad_enabled() and strategy.unrolls_solver
    with torch.set_grad_enabled(record), torch.autocast(device_type, enabled=False):
        sol = iterate(
            solver,
            guarded,
            flat0,
            tol=tol,
            max_iter=max_iter,
            stop_mode=stop_mode,
            trace=trace,
            divergence_ratio=divergence_ratio,
            sample_at=points[:-1],
            keep_state=strategy.reads_solver_state,
            stop_scope=stop_scope,
        )
    report_failure(sol, on_failure, "forward solve")
    z_flat = sol.z
    with torch.autocast(device_type, enabled=False):
        if guarded.dual:  # forward mode: the backward also gives z* its tangent
            z_flat = attach_tangent(strategy, flat_f, sol, on_failure)
        elif torch.is_grad_enabled() and not strategy.unrolls_solver:
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
    aux = _aux_at(f, z_out, flat0.shape[0]) if has_aux else None
    # One Solution, built once: its z is the very z returned (with the backward's gradient).
    return z_out, dataclasses.replace(sol, z=z_out, outputs=outputs, aux=aux), z_star
