"""The failure policy of the JAX backend: at once when a status is concrete, on the host under jit.

Same policies and messages as the torch backend (:mod:`deqkit.core.errors`).
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp

from ..core import DEQWarning, Status, failure_message
from .solvers.solution import Solution, SolverError, StatusCode

__all__ = ["report_failure"]


def report_failure(solution: Solution, on_failure: str, what: str) -> None:
    """Apply ``on_failure`` ("warn", "raise", "ignore") to a finished solve.

    >>> import jax.numpy as jnp
    >>> import deqkit.jax as dkj
    >>> sol = dkj.solve(lambda z: 0.5 * z + 1.0, jnp.zeros((1, 1)), max_iter=2, on_failure="ignore")
    >>> report_failure(sol, "raise", "forward solve")
    Traceback (most recent call last):
    ...
    deqkit.jax.solvers.solution.SolverError: forward solve ended with MAX_ITER: ...
    """
    if on_failure == "ignore":
        return
    code = solution.status.code
    try:
        status = int(code)
    except (TypeError, jax.errors.ConcretizationTypeError):
        host = functools.partial(_host_report, solution.stop_mode, solution.tol, on_failure, what)
        # The host is called only when the solve failed: a converged solve pays one scalar
        # compare, not a device-to-host round trip (under vmap, cond runs both branches).
        args = (code, solution.converged, solution.nstep, solution.residual, solution.nfev)
        jax.lax.cond(
            jnp.any(code != int(Status.CONVERGED)),
            lambda a: jax.debug.callback(host, *a),
            lambda a: None,
            args,
        )
        return
    if status != Status.CONVERGED:
        _apply(solution, on_failure, what)


def _apply(solution: Solution, on_failure: str, what: str, stable: bool = False) -> None:
    if on_failure == "raise":
        raise SolverError(solution, what)
    # A jitted training loop reports from the host on every step; a message without the
    # per-call numbers lets Python's warning filter show it once instead of on every step.
    detail = "the returned Solution has the numbers" if stable else repr(solution)
    warnings.warn(failure_message(what, solution.status.status, detail), DEQWarning, stacklevel=4)


def _host_report(stop_mode, tol, on_failure, what, status, converged, nstep, residual, nfev):
    # Under vmap the host sees every instance at once; the worst status speaks for them all.
    worst = int(jnp.max(status))
    if worst == Status.CONVERGED:
        return
    sol = Solution(
        z=None,
        status=StatusCode(jnp.asarray(worst)),
        converged=converged,
        nstep=nstep,
        residual=residual,
        abs_residual=residual,
        rel_residual=residual,
        nfev=jnp.max(nfev),
        stop_mode=stop_mode,
        tol=tol,
    )
    _apply(sol, on_failure, what, stable=True)
