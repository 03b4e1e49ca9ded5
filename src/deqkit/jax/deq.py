"""The JAX entry points: ``solve`` (no gradients) and ``fixed_point`` (differentiable).

f receives its parameters by closure: ``fixed_point(lambda z: cell(params, z, x), z0)``. The
closure is converted (as ``jax.closure_convert`` does) so that every traced array it closes over
(under ``jax.grad``, ``jax.jit`` or ``jax.vmap``) becomes an explicit argument; gradients reach
params and x through the chosen backward and never reach z0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from .._validate import check_bool, check_choice
from ..core import (
    DEFAULTS,
    FAILURE_POLICIES,
    FailurePolicy,
    ImplicitOptions,
    StopMode,
    StopScope,
    check_compatible,
)
from ._compat import ClosedJaxpr, Tracer, jaxpr_as_fun
from ._failure import report_failure
from ._state import flatten
from .backward import make_backward
from .solvers import Solution, StatusCode, make_solver
from .solvers.base import Program, check_loop_options, iterate_with

__all__ = ["fixed_point", "solve"]


def _prepare(f: Callable, z0: Any):
    flat0, spec = flatten(z0)
    try:
        bad = not bool(jnp.all(jnp.isfinite(flat0)))
    except jax.errors.ConcretizationTypeError:
        bad = False
    if bad:
        raise ValueError("z0 contains NaN or Inf")
    flat0 = jax.lax.stop_gradient(flat0)

    def flat_f(z):
        return spec.flatten_like(f(spec.unflatten(z)), "f(z)")

    closed = jax.make_jaxpr(flat_f)(flat0)
    fn, consts = _lift_closure(closed)
    # The solve gets every constant as an argument (concrete weights too: baked into the program
    # XLA would constant-fold them), and an equal program reuses the compiled solve.
    return flat0, spec, fn, consts, Program.lift(closed)


def _lift_closure(closed: ClosedJaxpr) -> tuple[Callable, tuple]:
    """Rewrite f's jaxpr as ``fn(z, *consts)`` with every traced value it closes over lifted.

    Like ``jax.closure_convert``, which lifts only values that may carry a gradient, but this
    lifts integer tracers too (Haiku RNG keys, step counters): left in the closure they would
    leak into the backward pass, which JAX traces separately from the forward.
    """
    lifted_at = [i for i, c in enumerate(closed.consts) if isinstance(c, Tracer)]
    kept = [None if i in lifted_at else c for i, c in enumerate(closed.consts)]
    jaxpr = closed.jaxpr

    def fn(z, *lifted):
        values = list(kept)
        for i, value in zip(lifted_at, lifted, strict=True):
            values[i] = value
        return jaxpr_as_fun(ClosedJaxpr(jaxpr, values))(z)[0]

    return fn, tuple(closed.consts[i] for i in lifted_at)


def _frozen(consts: tuple) -> tuple:
    """``stop_gradient`` on the floating-point constants (the only ones that carry gradients)."""
    return tuple(
        jax.lax.stop_gradient(c) if jnp.issubdtype(c.dtype, jnp.inexact) else c for c in consts
    )


def _check(tol, max_iter, stop_mode, on_failure, trace, divergence_ratio, stop_scope, has_aux):
    check_loop_options(tol, max_iter, stop_mode, trace, divergence_ratio, stop_scope)
    check_choice("on_failure", on_failure, FAILURE_POLICIES)
    check_bool("has_aux", has_aux)


def _state_map(f: Callable, has_aux: bool) -> Callable:
    """f itself, or with ``has_aux`` the map z ↦ state of f(z) = (state, aux)."""
    return (lambda z: _aux_pair(f(z))[0]) if has_aux else f


def _aux_pair(out: Any) -> tuple[Any, Any]:
    if not isinstance(out, tuple) or len(out) != 2:
        raise TypeError(
            f"with has_aux=True f must return a (state, aux) pair, got {type(out).__name__}"
            + (f" of length {len(out)}" if isinstance(out, tuple) else "")
        )
    return out


def _empty(z0: Any, stop_mode: str, tol: float, trace: bool, max_iter: int) -> Solution | None:
    """The Solution of a batch without samples (f is not called), or None for a real batch."""
    flat0, spec = flatten(z0)
    if spec.batch:
        return None
    none = jnp.zeros((0,), flat0.dtype)
    return Solution(
        z=spec.unflatten(jax.lax.stop_gradient(flat0)),
        status=StatusCode(jnp.asarray(0, jnp.int32)),  # CONVERGED: nothing was left unsolved
        converged=jnp.zeros((0,), bool),
        nstep=jnp.zeros((0,), jnp.int32),
        residual=none,
        abs_residual=none,
        rel_residual=none,
        nfev=jnp.asarray(0, jnp.int32),
        trace=jnp.zeros((0, max_iter), flat0.dtype) if trace else None,
        stop_mode=stop_mode,
        tol=float(tol),
    )


def solve(
    f: Callable[[Any], Any],
    z0: Any,
    solver: Any = DEFAULTS["solver"],
    *,
    tol: float = DEFAULTS["tol"],
    max_iter: int = DEFAULTS["max_iter"],
    stop_mode: StopMode = DEFAULTS["stop_mode"],
    stop_scope: StopScope = DEFAULTS["stop_scope"],
    on_failure: FailurePolicy = DEFAULTS["on_failure"],
    trace: bool = False,
    divergence_ratio: float = DEFAULTS["divergence_ratio"],
    has_aux: bool = False,
) -> Solution:
    """Find z* = f(z*); no gradient passes (closed-over arrays are ``stop_gradient``-ed).

    Args:
        f: maps a state (array or pytree of arrays, batch in dim 0) to one of the same
            structure, shapes and dtypes; closes over its parameters and inputs.
        z0: the initial state.
        solver: "fixed_point", "anderson", "broyden", "newton_krylov" or a solver object (JAX
            or torch ``deqkit`` options object).
        tol: per-sample tolerance on the residual chosen by ``stop_mode``.
        max_iter: iteration budget (the evaluation of f(z0) is the first iteration).
        stop_mode: "rel" (‖f(z) − z‖ / ‖f(z)‖), "abs" (‖f(z) − z‖) or "mixed"
            (‖f(z) − z‖ / (1 + ‖f(z)‖), for fixed points at or near zero).
        stop_scope: "sample" (each sample stops at tol and is frozen; f must not couple
            samples) or "batch" (all samples iterate until every one reaches tol).
        on_failure: "warn", "raise" or "ignore" when not converged (under ``jax.jit`` the
            policy runs on the host, only for a failed solve, when the returned z is used).
        trace: record per-iteration residuals in ``Solution.trace`` (B, max_iter).
        divergence_ratio: stop a sample as DIVERGED once its residual exceeds this many times
            its first residual.
        has_aux: f returns ``(state, aux)``; the solver iterates on the state and
            ``Solution.aux`` is the aux of one more evaluation of f at the returned z (None for
            an empty batch, where f is never called).

    Returns:
        A :class:`Solution` whose ``z`` has the structure of ``z0``. An empty batch (dim 0 of
        size 0) returns an empty CONVERGED Solution without calling f.

    >>> import jax.numpy as jnp
    >>> import deqkit.jax as dkj
    >>> sol = dkj.solve(lambda z: jnp.tanh(0.5 * z + 1.0), jnp.zeros((4, 3)), tol=1e-6)
    >>> sol.status.name, bool(sol.converged.all())
    ('CONVERGED', True)
    """
    _check(tol, max_iter, stop_mode, on_failure, trace, divergence_ratio, stop_scope, has_aux)
    empty = _empty(z0, stop_mode, tol, trace, max_iter)
    if empty is not None:
        return empty
    flat0, spec, _, _, (program, every) = _prepare(_state_map(f, has_aux), z0)
    sol = iterate_with(
        make_solver(solver),
        program,
        flat0,
        _frozen(every),
        tol=tol,
        max_iter=max_iter,
        stop_mode=stop_mode,
        stop_scope=stop_scope,
        trace=trace,
        divergence_ratio=divergence_ratio,
    )
    z = spec.unflatten(report_failure(sol, on_failure, "forward solve", sol.z))
    aux = jax.lax.stop_gradient(_aux_pair(f(z))[1]) if has_aux else None
    return dataclasses.replace(sol, z=z, aux=aux)


def fixed_point(
    f: Callable[[Any], Any],
    z0: Any,
    solver: Any = DEFAULTS["solver"],
    backward: Any = "implicit",
    *,
    tol: float = DEFAULTS["tol"],
    max_iter: int = DEFAULTS["max_iter"],
    stop_mode: StopMode = DEFAULTS["stop_mode"],
    stop_scope: StopScope = DEFAULTS["stop_scope"],
    on_failure: FailurePolicy = DEFAULTS["on_failure"],
    trace: bool = False,
    divergence_ratio: float = DEFAULTS["divergence_ratio"],
    has_aux: bool = False,
) -> tuple[Any, Solution]:
    """Differentiable fixed point z* = f(z*): gradients reach everything f closes over, never z0.

    Takes the arguments of :func:`solve` plus ``backward`` ("implicit", "phantom", "one_step",
    "unrolled" or an object such as ``dkj.Implicit(tol=1e-8)``).

    Returns:
        ``(z, solution)``: ``z`` has the structure of ``z0`` and carries the gradient (z* for
        "implicit" and "unrolled", the k steps from z* for "phantom", f(z*) for "one_step");
        ``solution`` holds the statistics and carries none, except ``solution.aux``
        (``has_aux=True``): the aux of f at the returned z, with gradients through that z and
        directly through what f closes over.

    >>> import jax, jax.numpy as jnp
    >>> import deqkit.jax as dkj
    >>> def loss(x):
    ...     z, sol = dkj.fixed_point(lambda z: 0.5 * z + x, jnp.zeros((1, 1)), "broyden", tol=1e-6,
    ...                              backward=dkj.Implicit("broyden"))
    ...     return z.sum()
    >>> value, grad = jax.value_and_grad(loss)(jnp.array([[2.0]]))
    >>> round(float(value), 4), round(float(grad[0, 0]), 4)
    (4.0, 2.0)
    """
    _check(tol, max_iter, stop_mode, on_failure, trace, divergence_ratio, stop_scope, has_aux)
    strategy = make_backward(backward)
    if isinstance(strategy, ImplicitOptions):  # an adjoint tol/max_iter left at None: the forward's
        strategy = strategy.for_forward(tol, max_iter)
    solver = make_solver(solver)
    check_compatible(solver, strategy)
    empty = _empty(z0, stop_mode, tol, trace, max_iter)
    if empty is not None:
        return empty.z, empty
    flat0, spec, fn, consts, (program, every) = _prepare(_state_map(f, has_aux), z0)
    unroll = strategy.unrolls_solver
    seen = every if unroll else _frozen(every)
    sol = iterate_with(
        solver,
        program,
        flat0,
        seen,
        tol=tol,
        max_iter=max_iter,
        stop_mode=stop_mode,
        stop_scope=stop_scope,
        trace=trace,
        divergence_ratio=divergence_ratio,
        unroll=unroll,
    )
    # The failure report is tied to z* before the backward sees it, so it runs whenever the
    # value or the gradient uses z*.
    z_found = report_failure(jax.lax.stop_gradient(sol), on_failure, "forward solve", sol.z)
    z = spec.unflatten(strategy.attach(fn, z_found, consts, on_failure))
    sol = jax.lax.stop_gradient(sol)
    aux = _aux_pair(f(z))[1] if has_aux else None
    return z, dataclasses.replace(sol, z=spec.unflatten(sol.z), aux=aux)
