"""The failure policy of the JAX backend: at once when a status is concrete, on the host under jit.

Same policies and messages as the torch backend (:mod:`deqkit.core.errors`).
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from ..core import DEQWarning, Status, failure_message
from .solvers.solution import Solution, SolverError, StatusCode

__all__ = ["report_failure"]


def report_failure(solution: Solution, on_failure: str, what: str, z: jax.Array) -> jax.Array:
    """Apply ``on_failure`` ("warn", "raise", "ignore") to a finished solve; return ``z``.

    Under ``jax.jit`` the policy runs on the host only when the solve failed, through a
    callback tied to the returned ``z`` (it runs whenever that z is used). The callback has no
    JAX effect, so a converged jitted solve keeps JAX's fast C++ dispatch (``jax.debug.callback``
    would route every call through Python: ~30 µs per call, 2× a whole B=1 solve).

    >>> import jax.numpy as jnp
    >>> import deqkit.jax as dkj
    >>> sol = dkj.solve(lambda z: 0.5 * z + 1.0, jnp.zeros((1, 1)), max_iter=2, on_failure="ignore")
    >>> report_failure(sol, "raise", "forward solve", sol.z)
    Traceback (most recent call last):
    ...
    deqkit.jax.solvers.solution.SolverError: forward solve ended with MAX_ITER: ...
    """
    if on_failure == "ignore":
        return z
    code = solution.status.code
    try:
        status = int(code)
    except (TypeError, jax.errors.ConcretizationTypeError):
        host = functools.partial(_reported, solution.stop_mode, solution.tol, on_failure, what)
        args = (z, code, solution.converged, solution.nstep, solution.residual, solution.nfev)
        return _tied(host, jnp.any(code != int(Status.CONVERGED)), args)
    if status != Status.CONVERGED:
        _apply(solution, on_failure, what)
    return z


def _tied(host, failed: jax.Array, args: tuple) -> jax.Array:
    """``args[0]``, passed through ``host(*args)`` on the host when ``failed`` (under vmap,
    where cond runs both branches, on every call; the host returns early then)."""

    # Every array is an argument (a custom_jvp must not close over traced values).
    @jax.custom_jvp
    def tied(z, failed, rest):
        out = jax.ShapeDtypeStruct(z.shape, z.dtype)
        return jax.lax.cond(
            failed,
            lambda a: jax.pure_callback(host, out, *a, vmap_method="expand_dims"),
            lambda a: a[0],
            (z, *rest),
        )

    @tied.defjvp
    def _identity(primals, tangents):
        return tied(*primals), tangents[0]

    return tied(args[0], failed, args[1:])


def _apply(solution: Solution, on_failure: str, what: str, stable: bool = False) -> None:
    if on_failure == "raise":
        raise SolverError(solution, what)
    # A jitted training loop reports from the host on every step; a message without the
    # per-call numbers lets Python's warning filter show it once instead of on every step.
    detail = "the returned Solution has the numbers" if stable else repr(solution)
    warnings.warn(failure_message(what, solution.status.status, detail), DEQWarning, stacklevel=4)


def _reported(stop_mode, tol, on_failure, what, z, *numbers):
    """The host side: report, then hand ``z`` back unchanged."""
    _host_report(stop_mode, tol, on_failure, what, *numbers)
    return np.asarray(z)


def _host_report(stop_mode, tol, on_failure, what, status, converged, nstep, residual, nfev):
    # Under vmap the host sees every instance at once; the worst status speaks for them all.
    worst = int(np.max(status))
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
