"""Unrolled pretraining: apply the weight-tied cell a fixed number of times, explicitly.

The original DEQ and MDEQ train their first steps as a shallow weight-tied network: z ← f(z)
applied n times from z0, backpropagated like any deep network. Early weights are far from
giving f a fixed point the solver can find; the unrolled warm-up shapes f cheaply. Switch with
``deq.pretrain(steps)`` and back with ``deq.pretrain(0)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ._compat import pytree
from ._sampling import sample_points
from ._validate import check_int
from .core import StopMode, stop_residual
from .solvers import LayerOutputs, Solution, Status, residuals
from .state import flatten

__all__ = ["unroll"]


def unroll(
    f: Callable[[Any], Any],
    z0: Any,
    steps: int,
    *,
    tol: float,
    stop_mode: StopMode,
    n_states: int = 1,
) -> tuple[Any, Solution]:
    """Apply f ``steps`` times from z0 (detached), recording the graph when grad is enabled.

    Returns ``(z, solution)`` like :func:`~deqkit.fixed_point` (``solution.z`` is z). The
    residual reported is that of
    the last step taken, ‖z_n − z_{n−1}‖ = ‖f(z_{n−1}) − z_{n−1}‖, so no extra f call is spent.

    >>> z, sol = unroll(lambda z: 0.5 * z + 1.0, torch.zeros(2, 1), 30, tol=1e-6, stop_mode="rel")
    >>> round(z[0, 0].item(), 4), sol.nstep.tolist(), sol.status.name
    (2.0, [30, 30], 'CONVERGED')
    """
    check_int("steps", steps, minimum=1)
    points = set(sample_points(n_states, steps)[:-1])
    z = _detach(z0)
    prev = z
    states = []
    for k in range(1, steps + 1):
        prev, z = z, f(z)
        if k in points:
            states.append(z)
    flat_prev, _ = flatten(prev, "z")
    flat_z, _ = flatten(z, "f(z)")
    abs_r, rel_r = (r.detach() for r in residuals(flat_prev, flat_z))
    scale = torch.linalg.vector_norm(flat_z.detach(), dim=1)
    res = rel_r if stop_mode == "rel" else stop_residual(stop_mode, abs_r, scale)
    finite = torch.isfinite(res)
    converged = finite & (res <= tol)
    if not bool(finite.all()):
        status = Status.NONFINITE
    else:
        status = Status.CONVERGED if bool(converged.all()) else Status.MAX_ITER
    batch = flat_z.shape[0]
    sol = Solution(
        z=z,
        status=status,
        converged=converged,
        nstep=torch.full((batch,), steps, dtype=torch.long, device=flat_z.device),
        residual=res,
        abs_residual=abs_r,
        rel_residual=rel_r,
        nfev=steps,
        stop_mode=stop_mode,
        tol=float(tol),
        outputs=LayerOutputs(states=(states + [z]) if n_states > 1 else None),
    )
    return z, sol


def _detach(state: Any) -> Any:
    return pytree.tree_map(lambda t: t.detach(), state)
