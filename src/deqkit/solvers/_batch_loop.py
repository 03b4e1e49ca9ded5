"""The loop of ``stop_scope="batch"``: the whole batch solved as one system, stopped together.

For f that couples samples (BatchNorm in f, batch means, the nodes of one graph) the batch is one
fixed-point problem with B·D unknowns. The solver sees it as one sample, a (1, B·D) matrix, so
Anderson's weights, Broyden's secant estimate and Newton–Krylov's Krylov space cover the coupling
between samples; f and the stopping rule see the (B, D) batch. The loop stops when every sample
meets ``tol`` at the same iterate, when a sample turns NaN/Inf or diverges, or at ``max_iter``;
the returned z is the iterate with the smallest worst-sample residual, whose residuals come from
one evaluation of f on it (f is evaluated once more only when a line search mixed rows of
several evaluations).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..core import Status, StopMode
from ._cpu import bookkeeping, norms
from .base import Evaluate, Solver
from .solution import LayerOutputs, Solution

__all__ = ["final_value", "iterate_batch", "status_of"]


def status_of(converged: Any, nonfinite: Any, diverged: Any) -> Status:
    """The batch's status from per-sample flags, worst first."""
    if nonfinite.any():
        return Status.NONFINITE
    if diverged.any():
        return Status.DIVERGED
    return Status.CONVERGED if converged.all() else Status.MAX_ITER


def final_value(z: torch.Tensor, last: list, evaluate: Evaluate) -> torch.Tensor:
    """f at ``z`` on the whole batch: the last evaluation's output when its input (``last`` =
    [input, output]) is ``z`` exactly, else one more evaluation (no frozen rows)."""
    seen = last[0]
    if seen is not None and (seen is z or (seen.shape == z.shape and torch.equal(seen, z))):
        return last[1]
    return evaluate(z)


def iterate_batch(
    solver: Solver,
    fn: Evaluate,
    z0: torch.Tensor,
    *,
    tol: float,
    max_iter: int,
    stop_mode: StopMode,
    trace: bool,
    divergence_ratio: float,
    sample_at: Sequence[int],
    keep_state: bool,
) -> Solution:
    """:func:`~deqkit.solvers.iterate` with ``stop_scope="batch"`` (options checked there).

    >>> import deqkit as dk
    >>> f = lambda z: 0.5 * z + 0.4 * z.mean(0, keepdim=True) + 1.0  # couples the samples
    >>> sol = iterate_batch(dk.Anderson(), f, torch.zeros(3, 2), tol=1e-8, max_iter=50,
    ...                     stop_mode="rel", trace=False, divergence_ratio=1e8, sample_at=(),
    ...                     keep_state=False)
    >>> sol.status.name, sol.nstep.tolist() == [sol.nstep[0].item()] * 3
    ('CONVERGED', True)
    """
    shape = z0.shape
    device = z0.device
    xp = bookkeeping(device)
    nfev = 0
    last: list = [None, None]  # the last (input, output) of f, for the final check

    def evaluate(flat: torch.Tensor) -> torch.Tensor:
        nonlocal nfev
        nfev += 1
        last[:] = flat, fn(flat.reshape(shape)).reshape(1, -1)
        return last[1]

    def residuals(z: torch.Tensor, fz: torch.Tensor, diff: torch.Tensor | None = None):
        return norms(z.reshape(shape), fz.reshape(shape), _view(diff, shape), stop_mode)

    z = z0.reshape(1, -1)
    fz = evaluate(z)
    best_abs, best_rel, best_res = residuals(z, fz)
    finite = xp.isfinite(best_abs)
    diverge_at = divergence_ratio * xp.floor_tiny(best_abs)
    nonfinite, diverged = ~finite, xp.zeros_like(finite)
    best_z, best_worst = z, best_res.max()
    history = [best_res] if trace else None
    sample_at = sorted(set(sample_at))
    states = [z0] if 1 in sample_at else []
    one = torch.ones(1, dtype=torch.bool, device=device)
    done = bool(nonfinite.any() or (best_res <= tol).all())
    memory = None if done else solver.init(z, fz)
    k = 1
    while not done and k < max_iter:
        z_new, fz_new, memory = solver.step(evaluate, z, fz, memory, one)
        k += 1
        abs_n, rel_n, res_n = residuals(z_new, fz_new, solver.residual(memory))
        finite = xp.isfinite(abs_n)
        nonfinite, diverged = ~finite, finite & (abs_n > diverge_at)
        if history is not None:
            history.append(xp.where(finite, res_n, history[-1]))
        if not finite.all():
            break  # the best (finite) iterate is kept
        if res_n.max() < best_worst:
            best_z, best_worst = z_new, res_n.max()
            best_abs, best_rel, best_res = abs_n, rel_n, res_n
        if k in sample_at:
            states.append(z_new.reshape(shape))
        done = bool(diverged.any() or (res_n <= tol).all())
        z, fz = z_new, fz_new
    state = None
    if memory is not None:
        if keep_state:
            state = solver.final_state(memory)
        else:
            solver.release(memory)
    if k > 1 and getattr(solver, "mixes_rows", False):
        # A line search mixed rows of several evaluations: check f at the returned z.
        best_abs, best_rel, best_res = residuals(best_z, final_value(best_z, last, evaluate))
        nonfinite = nonfinite | ~xp.isfinite(best_abs)
    converged = xp.isfinite(best_abs) & (best_res <= tol)
    nstep = xp.ones_int(shape[0], device) * k

    def to_torch(values: Any) -> torch.Tensor:
        return xp.to_device(values, device)

    return Solution(
        z=best_z.reshape(shape),
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
        stop_scope="batch",
    )


def _view(diff: torch.Tensor | None, shape: torch.Size) -> torch.Tensor | None:
    return None if diff is None else diff.reshape(shape)
