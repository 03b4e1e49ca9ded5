"""The shared iteration loop of the torch solvers: :func:`iterate`.

Stopping, freezing, best-iterate tracking, NaN and divergence detection live here once; a solver
only proposes steps (see :mod:`deqkit.solvers.base` for the protocol and its invariants).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .._validate import check_bool, check_choice, check_float, check_int
from ..core import DEFAULTS, STOP_MODES, STOP_SCOPES, Status, StopMode, StopScope
from ._batch_loop import final_value, iterate_batch, status_of
from ._cpu import bookkeeping, norms
from .anderson import Anderson
from .base import Evaluate, Solver
from .broyden import Broyden
from .solution import LayerOutputs, Solution

__all__ = ["iterate"]

#: ``residual`` hooks that return exactly ``f(z) − z`` (or None): the truth check needs no init.
_PLAIN_RESIDUALS = frozenset((Solver.residual, Anderson.residual, Broyden.residual))


def _select(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, *([1] * (new.dim() - 1))), new, old)


def iterate(
    solver: Solver,
    fn: Evaluate,
    z0: torch.Tensor,
    *,
    tol: float = DEFAULTS["tol"],
    max_iter: int = DEFAULTS["max_iter"],
    stop_mode: StopMode = DEFAULTS["stop_mode"],
    stop_scope: StopScope = DEFAULTS["stop_scope"],
    trace: bool = False,
    divergence_ratio: float = DEFAULTS["divergence_ratio"],
    sample_at: Sequence[int] = (),
    keep_state: bool = False,
) -> Solution:
    """Run ``solver`` on the fixed-point problem ``z = fn(z)`` for a (B, D) matrix ``z0``.

    With ``stop_scope="sample"`` (the default) stopping is per sample: a sample whose residual
    reaches ``tol`` is frozen (f sees it at its frozen iterate) while the others go on, and the
    loop ends when no sample is active or after ``max_iter`` iterations. A sample whose residual
    turns NaN/Inf, or grows past ``divergence_ratio`` times its first value, stops too. With
    ``stop_scope="batch"`` no sample stops alone: the whole batch iterates until every sample
    meets ``tol`` at the same iterate (for f that couples samples), or until a sample fails.
    ``sample_at`` lists iterations at which the current iterate is recorded into
    ``outputs.states``; ``keep_state=True`` puts the solver's final state in ``Solution.state``.

    The returned residuals and status are those of ``f`` at the returned z, evaluated on the
    whole batch, so f coupling samples cannot leave a stale CONVERGED: after a solve in which
    samples stopped at different iterations they come from the last evaluation of f, whose
    input is the returned z when every frozen sample converged; when it is not (a best iterate
    older than the last, a diverged sample, a line search mixing rows of several evaluations)
    f is evaluated once more at the returned z (counted in ``nfev``).

    The per-sample bookkeeping runs in NumPy on the host for CPU states and as device arithmetic
    elsewhere (see :mod:`deqkit.solvers._cpu`); both give the same numbers.

    >>> from deqkit.solvers import FixedPoint
    >>> sol = iterate(FixedPoint(), lambda z: 0.5 * z + 1.0, torch.zeros(3, 2), tol=1e-6)
    >>> sol.status.name, round(sol.z[0, 0].item(), 4)
    ('CONVERGED', 2.0)
    """
    check_float("tol", tol, minimum=0.0, strict_min=True)
    check_int("max_iter", max_iter, minimum=1)
    check_choice("stop_mode", stop_mode, STOP_MODES)
    check_choice("stop_scope", stop_scope, STOP_SCOPES)
    check_float("divergence_ratio", divergence_ratio, minimum=1.0, strict_min=True)
    check_bool("keep_state", keep_state)
    if z0.dim() != 2:
        raise ValueError(f"solvers take a (B, D) matrix, got shape {tuple(z0.shape)}")
    if z0.shape[0] == 0:
        return _empty(z0, stop_mode, stop_scope, tol, trace, sample_at)
    if stop_scope == "batch":
        return iterate_batch(
            solver,
            fn,
            z0,
            tol=tol,
            max_iter=max_iter,
            stop_mode=stop_mode,
            trace=trace,
            divergence_ratio=divergence_ratio,
            sample_at=sample_at,
            keep_state=keep_state,
        )
    device = z0.device
    xp = bookkeeping(device)
    nfev = 0
    # Frozen samples are evaluated at their frozen iterate, whatever the solver proposes for them,
    # so f (which may couple samples, e.g. through batch statistics) never sees them move.
    frozen: tuple[torch.Tensor, torch.Tensor] | None = None
    last: list = [None, None]  # the last (input, output) of f, for the final check

    def evaluate(z: torch.Tensor) -> torch.Tensor:
        nonlocal nfev
        nfev += 1
        if frozen is not None:
            z = _select(frozen[0], z, frozen[1])
        last[:] = z, fn(z)
        return last[1]

    z = z0
    fz = evaluate(z)
    abs_r, rel_r, res = norms(z, fz, None, stop_mode)
    finite = xp.isfinite(abs_r)
    diverge_at = divergence_ratio * xp.floor_tiny(abs_r)
    best_res, best_abs, best_rel = res, abs_r, rel_r
    converged = finite & (res <= tol)
    nonfinite = ~finite
    diverged = xp.zeros_like(finite)
    active = ~(converged | nonfinite)
    nstep = xp.ones_int(z.shape[0], device)
    history = [res] if trace else None
    sample_at = sorted(set(sample_at))
    states = [z] if 1 in sample_at else []
    batch = z.shape[0]
    n_active = int(active.sum())
    active_t = xp.to_device(active, device)
    # The solver works on its own iterates (z, fz) for every sample. A stopped sample's frozen
    # iterate and its best iterate are kept apart (``frozen_z``, ``kept_best``) and written only
    # when samples stop, so per iteration no (B, D) select runs except f's frozen-input one.
    best_z = frozen_z = kept_best = z
    memory = solver.init(z, fz) if n_active else None
    # Whether the returned z may differ from the last input of f as a whole: a step ran with
    # frozen samples, or some sample's best iterate is older than its last one. Then f is
    # evaluated once more at the end, so the residuals and status are true for a coupled f too.
    froze = best_old = False
    k = 1
    while n_active and k < max_iter:
        frozen = None if n_active == batch else (active_t, frozen_z)
        froze = froze or frozen is not None
        z_new, fz_new, memory = solver.step(evaluate, z, fz, memory, active_t)
        k += 1
        abs_n, rel_n, res_n = norms(z_new, fz_new, solver.residual(memory), stop_mode)
        if n_active == batch and ((res_n > tol) & (res_n < best_res) & (abs_n <= diverge_at)).all():
            # Fast path: every sample moved, improved and goes on (NaN fails each comparison).
            nstep = nstep + 1
            best_z, best_res, best_abs, best_rel = z_new, res_n, abs_n, rel_n
            best_old = False
            if history is not None:
                history.append(res_n)
            if k in sample_at:
                states.append(z_new)
            z, fz = z_new, fz_new
            continue
        finite = xp.isfinite(abs_n)
        update = active & finite
        improved = update & (res_n < best_res)
        now_converged = update & (res_n <= tol)
        now_nonfinite = active & ~finite
        now_diverged = update & (abs_n > diverge_at)
        stopped = now_converged | now_nonfinite | now_diverged
        nstep = nstep + active
        converged |= now_converged
        nonfinite |= now_nonfinite
        diverged |= now_diverged
        best_old = not improved.all()
        if (improved | ~active).all():
            best_z = z_new
        elif improved.any():
            best_z = _select(xp.to_device(improved, device), z_new, best_z)
        best_res = xp.where(improved, res_n, best_res)
        best_abs = xp.where(improved, abs_n, best_abs)
        best_rel = xp.where(improved, rel_n, best_rel)
        if history is not None:
            history.append(xp.where(update, res_n, history[-1]))
        if stopped.any():
            # A sample that turned NaN/Inf freezes at its last finite iterate.
            frozen_z = _select(xp.to_device(stopped & finite, device), z_new, frozen_z)
            if now_nonfinite.any():
                frozen_z = _select(xp.to_device(now_nonfinite, device), z, frozen_z)
            kept_best = _select(xp.to_device(stopped, device), best_z, kept_best)
            active = active & ~stopped
            n_active = int(active.sum())
            active_t = xp.to_device(active, device)
        if k in sample_at:
            states.append(_select(active_t, z_new, frozen_z) if n_active < batch else z_new)
        z, fz = z_new, fz_new
    state = None
    if memory is not None:
        if keep_state:
            state = solver.final_state(memory)
        else:
            solver.release(memory)
    if n_active < batch:
        best_z = _select(xp.to_device(~active, device), kept_best, best_z)
    if k > 1 and (froze or best_old or getattr(solver, "mixes_rows", False)):
        # The truth check: the residuals of f at the returned z, on the whole batch. When the
        # last input of f is that z (the usual end: frozen samples converged at their frozen
        # iterate, the rest at the last step) its output serves; else f is evaluated once more.
        frozen = None
        fz_c = final_value(best_z, last, evaluate)
        # The solver's own residual of (z, f(z)) (a solver may define its stopping residual, e.g.
        # a per-block criterion), read from a fresh init at the returned state; the built-in
        # solvers' residual is f(z) − z, which norms computes itself (bitwise the same).
        if type(solver).residual in _PLAIN_RESIDUALS:
            abs_c, rel_c, res_c = norms(best_z, fz_c, None, stop_mode)
        else:
            check = solver.init(best_z, fz_c)
            abs_c, rel_c, res_c = norms(best_z, fz_c, solver.residual(check), stop_mode)
            solver.release(check)
        finite = xp.isfinite(abs_c)
        nonfinite = nonfinite | ~finite
        best_res, best_abs, best_rel = res_c, abs_c, rel_c
        converged = finite & (res_c <= tol)

    def to_torch(values: Any) -> torch.Tensor:
        return xp.to_device(values, device)

    return Solution(
        z=best_z,
        status=status_of(converged, nonfinite, diverged),
        converged=to_torch(converged),
        nstep=to_torch(nstep),
        residual=to_torch(best_res),
        abs_residual=to_torch(best_abs),
        rel_residual=to_torch(best_rel),
        nfev=nfev,
        stop_mode=stop_mode,
        tol=float(tol),
        trace=to_torch(xp.stack(history)) if history is not None else None,
        state=state,
        outputs=LayerOutputs(states=states) if sample_at else LayerOutputs(),
    )


def _empty(
    z0: torch.Tensor,
    stop_mode: StopMode,
    stop_scope: StopScope,
    tol: float,
    trace: bool,
    sample_at: Sequence[int],
) -> Solution:
    """The Solution of a batch without samples: nothing to solve, f is not called."""
    none = torch.zeros(0, dtype=z0.dtype if z0.is_floating_point() else torch.float32)
    return Solution(
        z=z0,
        status=Status.CONVERGED,
        converged=torch.zeros(0, dtype=torch.bool),
        nstep=torch.zeros(0, dtype=torch.int64),
        residual=none,
        abs_residual=none,
        rel_residual=none,
        nfev=0,
        stop_mode=stop_mode,
        tol=float(tol),
        trace=torch.zeros(0, 0, dtype=none.dtype) if trace else None,
        state=None,
        outputs=LayerOutputs(states=[z0] if 1 in sample_at else [] if sample_at else None),
        stop_scope=stop_scope,
    )
