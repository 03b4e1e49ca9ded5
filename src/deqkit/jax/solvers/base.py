"""The JAX solver interface, the solution record and the shared iteration loop.

The twin of :mod:`deqkit.solvers.base`: the same stopping rule, per-sample freezing, best-iterate
tracking, divergence and NaN detection, written once around ``jax.lax.while_loop`` so every solve
is jit-able and vmap-able. A solver is a frozen (hashable, hence static) dataclass of its options:

* ``init(z, fz)`` returns the solver's memory (a pytree of arrays) after ``fz = f(z)``;
* ``step(fn, z, fz, memory, active)`` returns ``(z_new, f(z_new), memory, nfev)`` where ``nfev``
  counts the calls of ``fn`` the step made (an int32 scalar, dynamic under line search).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from ..._validate import check_bool, check_choice, check_float, check_int
from ...core import DEFAULTS, STOP_MODES, Status, StopMode
from .solution import Solution, SolverError, StatusCode

__all__ = [
    "DEFAULTS",
    "Solution",
    "Solver",
    "SolverError",
    "Status",
    "StatusCode",
    "iterate",
    "iterate_with",
    "residuals",
]

Fn = Callable[[jax.Array], jax.Array]


class Solver(abc.ABC):
    """Interface every JAX solver implements. Subclasses are frozen dataclasses of their options."""

    name: ClassVar[str]

    @abc.abstractmethod
    def init(self, z: jax.Array, fz: jax.Array) -> Any:
        """Return the solver memory after the first evaluation ``fz = f(z)``."""

    @abc.abstractmethod
    def step(
        self, fn: Fn, z: jax.Array, fz: jax.Array, memory: Any, active: jax.Array
    ) -> tuple[jax.Array, jax.Array, Any, jax.Array]:
        """Propose and evaluate the next iterate; return ``(z_new, f(z_new), memory, nfev)``."""

    def final_state(self, memory: Any) -> Any:
        """What the solver hands on in ``Solution.state`` (e.g. an inverse estimate); None."""
        return None


def residuals(z: jax.Array, fz: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-sample ``(‖f(z) − z‖, ‖f(z) − z‖ / ‖f(z)‖)`` over all state elements.

    >>> import jax.numpy as jnp
    >>> a, r = residuals(jnp.zeros((1, 2)), jnp.array([[3.0, 4.0]]))
    >>> float(a[0]), float(r[0])
    (5.0, 1.0)
    """
    abs_res = jnp.linalg.norm(fz - z, axis=1)
    scale = jnp.maximum(jnp.linalg.norm(fz, axis=1), jnp.finfo(fz.dtype).tiny)
    return abs_res, abs_res / scale


def _select(mask: jax.Array, new: jax.Array, old: jax.Array) -> jax.Array:
    return jnp.where(mask.reshape(-1, *([1] * (new.ndim - 1))), new, old)


def check_loop_options(tol, max_iter, stop_mode, trace, divergence_ratio) -> None:
    """Validate the loop's options (one clear line naming a bad one)."""
    check_float("tol", tol, minimum=0.0, strict_min=True)
    check_int("max_iter", max_iter, minimum=1)
    check_choice("stop_mode", stop_mode, STOP_MODES)
    check_bool("trace", trace)
    check_float("divergence_ratio", divergence_ratio, minimum=1.0, strict_min=True)


def iterate(
    solver: Solver,
    fn: Fn,
    z0: jax.Array,
    *,
    tol: float = DEFAULTS["tol"],
    max_iter: int = DEFAULTS["max_iter"],
    stop_mode: StopMode = DEFAULTS["stop_mode"],
    trace: bool = False,
    divergence_ratio: float = DEFAULTS["divergence_ratio"],
    unroll: bool = False,
    keep_state: bool = False,
) -> Solution:
    """Run ``solver`` on ``z = fn(z)`` for a (B, D) matrix ``z0`` inside one ``lax.while_loop``.

    Mirrors :func:`deqkit.solvers.iterate` step for step: per-sample stopping and freezing, the
    lowest-residual iterate per sample, NONFINITE/DIVERGED detection. ``unroll=True`` runs the
    same body in a ``fori_loop`` of static length (skipping finished iterations with ``lax.cond``)
    so that reverse-mode autodiff can pass through the whole solve. ``keep_state=True`` puts
    the solver's :meth:`~Solver.final_state` in ``Solution.state``.

    >>> import jax.numpy as jnp
    >>> from deqkit.jax import FixedPoint
    >>> sol = iterate(FixedPoint(), lambda z: 0.5 * z + 1.0, jnp.zeros((3, 2)), tol=1e-6)
    >>> sol.status.name, round(float(sol.z[0, 0]), 4)
    ('CONVERGED', 2.0)
    """
    check_loop_options(tol, max_iter, stop_mode, trace, divergence_ratio)
    check_bool("unroll", unroll)
    check_bool("keep_state", keep_state)
    if z0.ndim != 2:
        raise ValueError(f"solvers take a (B, D) matrix, got shape {tuple(z0.shape)}")
    pick_rel = stop_mode == "rel"
    batch = z0.shape[0]
    z = z0
    fz = fn(z)
    abs_r, rel_r = residuals(z, fz)
    res = rel_r if pick_rel else abs_r
    finite = jnp.isfinite(abs_r)
    first_abs = jnp.maximum(abs_r, jnp.finfo(abs_r.dtype).tiny)
    converged = finite & (res <= tol)
    nonfinite = ~finite
    history = None
    if trace:
        history = jnp.full((batch, max_iter), jnp.nan, res.dtype).at[:, 0].set(res)
    carry = {
        "k": jnp.asarray(1, jnp.int32),
        "z": z,
        "fz": fz,
        "memory": solver.init(z, fz),
        "best_z": z,
        "best_res": res,
        "best_abs": abs_r,
        "best_rel": rel_r,
        "nstep": jnp.ones(batch, jnp.int32),
        "converged": converged,
        "nonfinite": nonfinite,
        "diverged": jnp.zeros_like(finite),
        "active": ~(converged | nonfinite),
        "nfev": jnp.asarray(1, jnp.int32),
        "history": history,
    }

    def running(c):
        return jnp.any(c["active"]) & (c["k"] < max_iter)

    def body(c):
        active = c["active"]
        z_new, fz_new, memory, nfev = solver.step(fn, c["z"], c["fz"], c["memory"], active)
        k = c["k"] + 1
        abs_n, rel_n = residuals(z_new, fz_new)
        res_n = rel_n if pick_rel else abs_n
        finite = jnp.isfinite(abs_n)
        update = active & finite
        z, fz = _select(update, z_new, c["z"]), _select(update, fz_new, c["fz"])
        improved = update & (res_n < c["best_res"])
        converged = c["converged"] | (update & (res_n <= tol))
        nonfinite = c["nonfinite"] | (active & ~finite)
        diverged = c["diverged"] | (update & (abs_n > divergence_ratio * first_abs))
        history = c["history"]
        if history is not None:
            history = history.at[:, k - 1].set(jnp.where(update, res_n, history[:, k - 2]))
        return {
            "k": k,
            "z": z,
            "fz": fz,
            "memory": memory,
            "best_z": _select(improved, z, c["best_z"]),
            "best_res": jnp.where(improved, res_n, c["best_res"]),
            "best_abs": jnp.where(improved, abs_n, c["best_abs"]),
            "best_rel": jnp.where(improved, rel_n, c["best_rel"]),
            "nstep": jnp.where(active, k, c["nstep"]),
            "converged": converged,
            "nonfinite": nonfinite,
            "diverged": diverged,
            "active": active & ~(converged | nonfinite | diverged),
            "nfev": c["nfev"] + nfev,
            "history": history,
        }

    if unroll:
        c = jax.lax.fori_loop(
            1, max_iter, lambda _, c: jax.lax.cond(running(c), body, lambda c: c, c), carry
        )
    else:
        c = jax.lax.while_loop(running, body, carry)
    status = jnp.where(
        jnp.any(c["nonfinite"]),
        int(Status.NONFINITE),
        jnp.where(
            jnp.any(c["diverged"]),
            int(Status.DIVERGED),
            jnp.where(jnp.all(c["converged"]), int(Status.CONVERGED), int(Status.MAX_ITER)),
        ),
    ).astype(jnp.int32)
    return Solution(
        z=c["best_z"],
        status=StatusCode(status),
        converged=c["converged"],
        nstep=c["nstep"],
        residual=c["best_res"],
        abs_residual=c["best_abs"],
        rel_residual=c["best_rel"],
        nfev=c["nfev"],
        trace=c["history"],
        state=solver.final_state(c["memory"]) if keep_state else None,
        stop_mode=stop_mode,
        tol=float(tol),
    )


def iterate_with(solver: Solver, fn, z0: jax.Array, consts: tuple, **options) -> Solution:
    """:func:`iterate` on ``z = fn(z, *consts)`` as one jitted computation.

    Called eagerly, this compiles the whole solve once instead of dispatching the setup op by op
    around a separately compiled loop (several times faster for a first call); under an outer
    trace the inner ``jax.jit`` is simply inlined. ``consts`` travel as arguments, not as
    constants baked into the compiled program.
    """
    run = jax.jit(lambda z0, consts: iterate(solver, lambda z: fn(z, *consts), z0, **options))
    return run(z0, consts)
