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
from ...core import DEFAULTS, STOP_MODES, STOP_SCOPES, Status, StopMode, StopScope
from ._batch_loop import iterate_batch
from ._loops import measure, run_loop, status_of
from ._program import Program, cached_jit
from .solution import Solution, SolverError, StatusCode

__all__ = [
    "DEFAULTS",
    "Solution",
    "Solver",
    "SolverError",
    "Status",
    "StatusCode",
    "Program",
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

    #: Whether ``step(fn, z0, z0, empty(z0), active)`` evaluates f at z0 itself and returns
    #: ``init(z0, f(z0))`` as the memory: the loop then makes the first evaluation as its first
    #: iteration, and f appears once in the compiled program instead of twice.
    starts_in_loop: ClassVar[bool] = False

    def empty(self, z: jax.Array) -> Any:
        """The memory before any evaluation (used when :attr:`starts_in_loop`)."""
        raise NotImplementedError(f"{type(self).__name__} evaluates f(z0) before its loop")

    @property
    def mixes_rows(self) -> bool:
        """Whether a step may assemble ``f(z_new)`` from rows of several evaluations (a
        per-sample line search): the loop then checks f at the returned z once more."""
        return False

    def final_state(self, memory: Any) -> Any:
        """What the solver hands on in ``Solution.state`` (e.g. an inverse estimate); None."""
        return None

    def static(self) -> Solver:
        """This solver with only static-length loops in its step (the same iterates), which
        reverse-mode autodiff can pass through; ``iterate(..., unroll=True)`` uses it."""
        return self


def residuals(z: jax.Array, fz: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-sample ``(‖f(z) − z‖, ‖f(z) − z‖ / ‖f(z)‖)`` over all state elements.

    >>> import jax.numpy as jnp
    >>> a, r = residuals(jnp.zeros((1, 2)), jnp.array([[3.0, 4.0]]))
    >>> float(a[0]), float(r[0])
    (5.0, 1.0)
    """
    abs_res, scale, rel = measure(z, fz, "rel")
    return abs_res, rel


def _select(mask: jax.Array, new: jax.Array, old: jax.Array) -> jax.Array:
    return jnp.where(mask.reshape(-1, *([1] * (new.ndim - 1))), new, old)


def check_loop_options(
    tol, max_iter, stop_mode, trace, divergence_ratio, stop_scope=DEFAULTS["stop_scope"]
) -> None:
    """Validate the loop's options (one clear line naming a bad one)."""
    check_float("tol", tol, minimum=0.0, strict_min=True)
    check_int("max_iter", max_iter, minimum=1)
    check_choice("stop_mode", stop_mode, STOP_MODES)
    check_choice("stop_scope", stop_scope, STOP_SCOPES)
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
    stop_scope: StopScope = DEFAULTS["stop_scope"],
    trace: bool = False,
    divergence_ratio: float = DEFAULTS["divergence_ratio"],
    unroll: bool = False,
    keep_state: bool = False,
) -> Solution:
    """Run ``solver`` on ``z = fn(z)`` for a (B, D) matrix ``z0`` inside one ``lax.while_loop``.

    Mirrors :func:`deqkit.solvers.iterate` step for step. ``stop_scope="sample"``: a sample
    that reaches ``tol`` (or turns NaN/Inf, or grows past ``divergence_ratio`` times its first
    residual) is frozen, f keeps seeing it at its frozen iterate while the others go on, and each
    sample returns its lowest-residual iterate. ``stop_scope="batch"``: the batch is solved as
    one system until every sample meets ``tol`` at the same iterate (for f that couples samples).
    Either way the residuals and status are those of f at the returned z: when f has not seen
    that z whole (a sample stopped earlier, an older best iterate, a line search mixing rows of
    several evaluations), f is evaluated once more on it (counted in ``nfev``).

    ``unroll=True`` runs the same body in a ``fori_loop`` of static length (skipping finished
    iterations with ``lax.cond``) so that reverse-mode autodiff can pass through the whole solve.
    ``keep_state=True`` puts the solver's :meth:`~Solver.final_state` in ``Solution.state``.

    >>> import jax.numpy as jnp
    >>> from deqkit.jax import FixedPoint
    >>> sol = iterate(FixedPoint(), lambda z: 0.5 * z + 1.0, jnp.zeros((3, 2)), tol=1e-6)
    >>> sol.status.name, round(float(sol.z[0, 0]), 4)
    ('CONVERGED', 2.0)
    """
    check_loop_options(tol, max_iter, stop_mode, trace, divergence_ratio, stop_scope)
    check_bool("unroll", unroll)
    check_bool("keep_state", keep_state)
    if z0.ndim != 2:
        raise ValueError(f"solvers take a (B, D) matrix, got shape {tuple(z0.shape)}")
    options = dict(tol=tol, max_iter=max_iter, stop_mode=stop_mode, trace=trace)
    if z0.shape[0] == 0:
        return _empty(z0, **options)
    options.update(divergence_ratio=divergence_ratio, unroll=unroll, keep_state=keep_state)
    if unroll:
        solver = solver.static()
    if stop_scope == "batch":
        return iterate_batch(solver, fn, z0, **options)
    return _iterate_samples(solver, fn, z0, **options)


#: Bits of the per-sample stop word of the sample loop (0: still iterating).
_CONVERGED, _NONFINITE, _DIVERGED = 1, 2, 4


def _iterate_samples(
    solver, fn, z0, *, tol, max_iter, stop_mode, trace, divergence_ratio, unroll, keep_state
) -> Solution:
    batch = z0.shape[0]
    dtype = jax.eval_shape(lambda z: measure(z, z, stop_mode), z0)[2].dtype
    nan = jnp.full(batch, jnp.nan, dtype)
    zeros = jnp.zeros(batch, jnp.int32)
    # The loop state is kept small (each piece is work in every iteration): one int8 stop word
    # per sample instead of four flags, the iteration at which each sample last improved instead
    # of a per-iteration reduction; the stop test of the loop is its only reduction. This is the
    # state before the first evaluation: record() turns it into the state after it, the same
    # code as every later iteration's bookkeeping.
    blank = {
        "k": jnp.asarray(0, jnp.int32),
        "z": z0,
        "fz": z0,
        "memory": solver.empty(z0) if solver.starts_in_loop else None,
        # Each stopped sample's frozen iterate: f sees it in place of the solver's proposals.
        "hold": z0,
        "best": (z0, nan, nan, nan),
        "best_k": zeros,
        "nstep": zeros,
        "stop": jnp.zeros(batch, jnp.int8),
        "diverge_at": nan,
        "nfev": jnp.asarray(0, jnp.int32),
        "history": jnp.full((batch, max_iter), jnp.nan, dtype) if trace else None,
    }

    def record(c, active, z_new, fz_new, memory, nfev):
        k = c["k"] + 1
        first = k == 1
        abs_n, scale_n, res_n = measure(z_new, fz_new, stop_mode)
        finite = jnp.isfinite(abs_n)
        tiny = jnp.finfo(abs_n.dtype).tiny
        diverge_at = jnp.where(first, divergence_ratio * jnp.maximum(abs_n, tiny), c["diverge_at"])
        update = active & finite
        improved = (update & (res_n < c["best"][3])) | first
        why = jnp.where(
            finite,
            jnp.where(res_n <= tol, _CONVERGED, 0) | jnp.where(abs_n > diverge_at, _DIVERGED, 0),
            _NONFINITE,
        ).astype(jnp.int8)
        stop = jnp.where(active, why, c["stop"])
        # A sample that turned NaN/Inf freezes at its last finite iterate.
        frozen_at = _select(finite, z_new, c["z"])
        best = (z_new, abs_n, scale_n, res_n)
        out = dict(c, k=k, z=z_new, fz=fz_new, memory=memory, nfev=c["nfev"] + nfev, stop=stop)
        out["best"] = jax.tree.map(lambda new, old: _select(improved, new, old), best, c["best"])
        out["best_k"] = jnp.where(improved, k, c["best_k"])
        out["hold"] = _select(active & (stop != 0), frozen_at, c["hold"])
        out["nstep"] = jnp.where(active, k, c["nstep"])
        out["diverge_at"] = diverge_at
        if trace:
            hist = c["history"]
            kept = jnp.where(update | first, res_n, hist[:, k - 2])
            out["history"] = hist.at[:, k - 1].set(kept)
        return out

    if solver.starts_in_loop:
        carry = blank
    else:
        fz = fn(z0)
        one = jnp.asarray(1, jnp.int32)
        carry = record(blank, blank["stop"] == 0, z0, fz, solver.init(z0, fz), one)

    def running(c):
        return jnp.any(c["stop"] == 0) & (c["k"] < max_iter)

    def body(c):
        active, hold = c["stop"] == 0, c["hold"]

        def evaluate(y):
            return fn(_select(active, y, hold))

        return record(c, active, *solver.step(evaluate, c["z"], c["fz"], c["memory"], active))

    c = run_loop(running, body, carry, max_iter, unroll, first=1 if solver.starts_in_loop else 2)
    best_z = c["best"][0]
    # The truth check: the residuals of f at the returned z, on the whole batch. f saw that z
    # whole at its last evaluation when every sample improved in the last iteration; else, when
    # its last input is that z anyway (samples stopped earlier converged at their frozen
    # iterate, the rest at the last step) its output serves; otherwise f is evaluated once more.
    # Without a re-evaluation these are the very numbers the loop kept.
    whole = jnp.all(c["best_k"] == c["k"]) & (not solver.mixes_rows)
    last_in = _select(c["nstep"] == c["k"], c["z"], c["hold"])
    again = (c["k"] > 1) & ~whole & (jnp.any(last_in != best_z) | solver.mixes_rows)
    f_best = jax.lax.cond(again, lambda: fn(best_z), lambda: c["fz"])
    abs_r, scale, res = measure(best_z, f_best, stop_mode)
    finite = jnp.isfinite(abs_r)
    converged = finite & (res <= tol)
    nonfinite = ((c["stop"] & _NONFINITE) != 0) | ~finite
    return Solution(
        z=best_z,
        status=StatusCode(status_of(converged, nonfinite, (c["stop"] & _DIVERGED) != 0)),
        converged=converged,
        nstep=c["nstep"],
        residual=res,
        abs_residual=abs_r,
        rel_residual=abs_r / scale,
        nfev=c["nfev"] + again.astype(jnp.int32),
        trace=c["history"],
        state=solver.final_state(c["memory"]) if keep_state else None,
        stop_mode=stop_mode,
        tol=float(tol),
    )


def _empty(z0, *, tol, max_iter, stop_mode, trace) -> Solution:
    """The Solution of a batch without samples: nothing to solve, f is not called."""
    none = jnp.zeros(0, z0.dtype if jnp.issubdtype(z0.dtype, jnp.inexact) else jnp.float32)
    return Solution(
        z=z0,
        status=StatusCode(jnp.asarray(int(Status.CONVERGED), jnp.int32)),
        converged=jnp.zeros(0, bool),
        nstep=jnp.zeros(0, jnp.int32),
        residual=none,
        abs_residual=none,
        rel_residual=none,
        nfev=jnp.asarray(0, jnp.int32),
        trace=jnp.zeros((0, max_iter), none.dtype) if trace else None,
        stop_mode=stop_mode,
        tol=float(tol),
    )


def _solve_program(solver: Solver, program: Program, options: tuple) -> Callable:
    def run(z0, consts):
        return iterate(solver, lambda z: program(z, *consts), z0, **dict(options))

    return run


def iterate_with(solver: Solver, program: Program, z0: jax.Array, consts: tuple, **options):
    """:func:`iterate` on ``z = program(z, *consts)`` as one jitted computation.

    Called eagerly, this compiles the whole solve once instead of dispatching the setup op by op
    around a separately compiled loop, and a later call with an equal program, solver, options
    and shapes reuses the compiled solve; under an outer trace it is simply inlined. ``consts``
    travel as arguments, never as constants baked into the compiled program.

    >>> import jax, jax.numpy as jnp
    >>> from deqkit.jax import FixedPoint
    >>> w = jnp.full((1, 2), 0.5)
    >>> program, consts = Program.lift(jax.make_jaxpr(lambda z: w * z + 1.0)(jnp.zeros((1, 2))))
    >>> round(float(iterate_with(FixedPoint(), program, jnp.zeros((1, 2)), consts).z[0, 0]), 3)
    2.0
    """
    run = cached_jit(_solve_program, solver, program, tuple(sorted(options.items())))
    return run(z0, tuple(consts))
