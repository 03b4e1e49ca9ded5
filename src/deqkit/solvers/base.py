"""The solver interface, the solution record and the shared iteration loop.

A solver is a small frozen dataclass (its fields are its options) with two methods:

* ``init(z, fz)`` returns the solver's memory after the first evaluation ``fz = f(z)``;
* ``step(evaluate, z, fz, memory, active)`` proposes the next iterate, evaluates it through
  ``evaluate`` (which counts f-evaluations) and returns ``(z_new, fz_new, memory)``.

Everything else -- per-sample stopping and freezing, best-iterate tracking, divergence and NaN
detection, traces and statistics -- lives once in :func:`iterate`, so a new solver is one short
file and behaves like every other. Solvers see only (B, D) matrices, never autograd or modules.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from .._validate import check_choice, check_float, check_int
from ..options import STOP_MODES

__all__ = [
    "DEFAULTS",
    "STOP_MODES",
    "Solution",
    "Solver",
    "SolverError",
    "Status",
    "iterate",
    "residuals",
    "to_host",
]

Evaluate = Callable[[torch.Tensor], torch.Tensor]


#: Defaults shared by ``solve``, ``fixed_point``, ``DEQ`` and the JAX backend.
DEFAULTS = {
    "solver": "anderson",
    "tol": 1e-4,
    "max_iter": 50,
    "stop_mode": "rel",
    "divergence_ratio": 1e8,
}


class Status(enum.IntEnum):
    """How a solve ended. Ordered by severity: the batch reports its worst sample."""

    CONVERGED = 0
    MAX_ITER = 1
    DIVERGED = 2
    NONFINITE = 3

    @property
    def message(self) -> str:
        return _MESSAGES[self]


_MESSAGES = {
    Status.CONVERGED: "every sample reached the tolerance",
    Status.MAX_ITER: "max_iter was reached before every sample reached the tolerance",
    Status.DIVERGED: "the residual grew past divergence_ratio times its initial value",
    Status.NONFINITE: "NaN or Inf appeared in z or f(z); the best finite iterate was kept",
}


@dataclass(repr=False)
class Solution:
    """Result of a solve. Per-sample fields have shape (B,).

    ``z`` is each sample's lowest-residual iterate and ``residual`` its residual in the solve's
    ``stop_mode``; ``nstep`` counts the iterations a sample ran (the evaluation of ``f(z0)`` is
    iteration 1); ``nfev`` counts all calls of f. ``trace`` (B, iterations) holds per-iteration
    residuals when asked for; ``states`` the sampled intermediate states; ``backward`` the adjoint
    solve's own Solution once an implicit backward has run. ``jac_loss`` (Jacobian penalty) and
    ``skip_loss`` (Skip-DEQ initialiser loss) are differentiable scalars set by ``DEQ`` when asked.
    """

    z: Any
    status: Status
    converged: torch.Tensor
    nstep: torch.Tensor
    residual: torch.Tensor
    abs_residual: torch.Tensor
    rel_residual: torch.Tensor
    nfev: int
    stop_mode: str
    tol: float
    trace: torch.Tensor | None = None
    states: list | None = None
    backward: Solution | None = None
    jac_loss: torch.Tensor | None = None
    skip_loss: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return self.status == Status.CONVERGED

    def __repr__(self) -> str:
        n = self.converged.numel()
        text = (
            f"Solution(status={self.status.name}, converged={int(self.converged.sum())}/{n}, "
            f"nstep={_span(self.nstep)}, {self.stop_mode}_residual={_span(self.residual, '.2e')}, "
            f"tol={self.tol:.1e}, nfev={self.nfev}"
        )
        if self.backward is not None:
            text += f", backward={self.backward!r}"
        return text + ")"


def _span(values: torch.Tensor, fmt: str = "d") -> str:
    lo, hi = values.min().item(), values.max().item()
    return f"{lo:{fmt}}" if lo == hi else f"{lo:{fmt}}..{hi:{fmt}}"


class SolverError(RuntimeError):
    """Raised under ``on_failure="raise"`` when a solve does not converge."""

    def __init__(self, solution: Solution, what: str = "forward solve"):
        self.solution = solution
        self.status = solution.status
        super().__init__(
            f"{what} ended with {solution.status.name}: {solution.status.message}; {solution!r}"
        )


class Solver(abc.ABC):
    """Interface every solver implements. Subclasses are frozen dataclasses of their options."""

    name: ClassVar[str]

    @abc.abstractmethod
    def init(self, z: torch.Tensor, fz: torch.Tensor) -> Any:
        """Return the solver memory after the first evaluation ``fz = f(z)``."""

    @abc.abstractmethod
    def step(
        self,
        evaluate: Evaluate,
        z: torch.Tensor,
        fz: torch.Tensor,
        memory: Any,
        active: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Propose and evaluate the next iterate; return ``(z_new, f(z_new), memory)``.

        ``active`` (B,) marks samples still iterating; the loop ignores proposals for the rest.
        The loop keeps ``z_new`` and ``fz_new`` without copying them: never write into them (or
        return views of buffers the solver writes into) later.
        """

    def residual(self, memory: Any) -> torch.Tensor | None:
        """``f(z) − z`` for the iterate the last step returned, when the solver has it at hand
        (the loop then skips recomputing it); ``None`` otherwise."""
        return None

    def release(self, memory: Any) -> None:  # noqa: B027 (optional hook, no-op by default)
        """Called once after the last step; may hand buffers in ``memory`` back for reuse."""


def residuals(z: torch.Tensor, fz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(‖f(z) − z‖, ‖f(z) − z‖ / ‖f(z)‖)`` over all state elements.

    >>> a, r = residuals(torch.zeros(1, 2), torch.tensor([[3.0, 4.0]]))
    >>> a.item(), r.item()
    (5.0, 1.0)
    """
    abs_res = torch.linalg.vector_norm(fz - z, dim=1)
    scale = torch.linalg.vector_norm(fz, dim=1).clamp_min(torch.finfo(fz.dtype).tiny)
    return abs_res, abs_res / scale


def to_host(vectors: Sequence[torch.Tensor]) -> np.ndarray:
    """Per-sample (B,) vectors as one (n, B) host array, in one device-to-host copy: detached,
    in their own dtype when float32/float64, float32 otherwise.

    >>> to_host([torch.ones(2), torch.zeros(2)]).tolist()
    [[1.0, 1.0], [0.0, 0.0]]
    """
    stacked = torch.stack(vectors).detach()
    if stacked.dtype not in (torch.float32, torch.float64):
        stacked = stacked.float()
    return stacked.cpu().numpy()


def _host_residuals(
    z: torch.Tensor, fz: torch.Tensor, diff: torch.Tensor | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`residuals` as host arrays, from one device-to-host copy.

    The loop's per-sample bookkeeping (a few dozen operations on (B,) vectors) runs in NumPy: on
    a CPU a PyTorch call on a tiny tensor costs 5–15 µs of dispatch, which for a small cell adds
    up to a sizeable fraction of one f-evaluation; on a GPU the loop synchronises once per
    iteration either way. Computed in the state's dtype (float32 at least), like the solvers.
    ``diff``, when given, is ``fz − z`` already computed by the solver.
    """
    with torch.no_grad():
        if diff is None:
            diff = fz - z
        abs_res, scale = to_host(
            (torch.linalg.vector_norm(diff, dim=1), torch.linalg.vector_norm(fz, dim=1))
        )
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return abs_res, abs_res / np.maximum(scale, np.finfo(scale.dtype).tiny)


def _select(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, *([1] * (new.dim() - 1))), new, old)


def iterate(
    solver: Solver,
    fn: Evaluate,
    z0: torch.Tensor,
    *,
    tol: float = DEFAULTS["tol"],
    max_iter: int = DEFAULTS["max_iter"],
    stop_mode: str = DEFAULTS["stop_mode"],
    trace: bool = False,
    divergence_ratio: float = DEFAULTS["divergence_ratio"],
    sample_at: Sequence[int] = (),
) -> Solution:
    """Run ``solver`` on the fixed-point problem ``z = fn(z)`` for a (B, D) matrix ``z0``.

    Stopping is per sample: a sample whose residual reaches ``tol`` is frozen while the others go
    on, and the loop ends when no sample is active or after ``max_iter`` iterations. A sample whose
    residual turns NaN/Inf, or grows past ``divergence_ratio`` times its first value, stops too.
    ``sample_at`` lists iterations at which the current iterate is recorded into ``states``.

    >>> from deqkit.solvers import FixedPoint
    >>> sol = iterate(FixedPoint(), lambda z: 0.5 * z + 1.0, torch.zeros(3, 2), tol=1e-6)
    >>> sol.status.name, round(sol.z[0, 0].item(), 4)
    ('CONVERGED', 2.0)
    """
    check_float("tol", tol, minimum=0.0, strict_min=True)
    check_int("max_iter", max_iter, minimum=1)
    check_choice("stop_mode", stop_mode, STOP_MODES)
    check_float("divergence_ratio", divergence_ratio, minimum=1.0, strict_min=True)
    if z0.dim() != 2:
        raise ValueError(f"solvers take a (B, D) matrix, got shape {tuple(z0.shape)}")
    device = z0.device
    nfev = 0
    # Frozen samples are evaluated at their frozen iterate, whatever the solver proposes for them,
    # so f (which may couple samples, e.g. through batch statistics) never sees them move.
    frozen: tuple[torch.Tensor, torch.Tensor] | None = None

    def evaluate(z: torch.Tensor) -> torch.Tensor:
        nonlocal nfev
        nfev += 1
        if frozen is not None:
            z = _select(frozen[0], z, frozen[1])
        return fn(z)

    def on_device(mask: np.ndarray) -> torch.Tensor:
        return torch.tensor(mask, device=device)

    pick_rel = stop_mode == "rel"
    z = z0
    fz = evaluate(z)
    abs_r, rel_r = _host_residuals(z, fz)
    res = rel_r if pick_rel else abs_r
    finite = np.isfinite(abs_r)
    diverge_at = divergence_ratio * np.maximum(abs_r, np.finfo(abs_r.dtype).tiny)
    best_res, best_abs, best_rel = res, abs_r, rel_r
    converged = finite & (res <= tol)
    nonfinite = ~finite
    diverged = np.zeros_like(finite)
    active = ~(converged | nonfinite)
    nstep = np.ones(z.shape[0], dtype=np.int64)
    history = [res] if trace else None
    sample_at = sorted(set(sample_at))
    states = [z] if 1 in sample_at else []
    batch = z.shape[0]
    n_active = int(active.sum())
    active_t = on_device(active)
    # The solver works on its own iterates (z, fz) for every sample. A stopped sample's frozen
    # iterate and its best iterate are kept apart (``frozen_z``, ``kept_best``) and written only
    # when samples stop, so per iteration no (B, D) select runs except f's frozen-input one.
    best_z = frozen_z = kept_best = z
    memory = solver.init(z, fz) if n_active else None
    k = 1
    while n_active and k < max_iter:
        frozen = None if n_active == batch else (active_t, frozen_z)
        z_new, fz_new, memory = solver.step(evaluate, z, fz, memory, active_t)
        k += 1
        abs_n, rel_n = _host_residuals(z_new, fz_new, solver.residual(memory))
        res_n = rel_n if pick_rel else abs_n
        if n_active == batch and ((res_n > tol) & (res_n < best_res) & (abs_n <= diverge_at)).all():
            # Fast path: every sample moved, improved and goes on (NaN fails each comparison).
            nstep += 1
            best_z, best_res, best_abs, best_rel = z_new, res_n, abs_n, rel_n
            if history is not None:
                history.append(res_n)
            if k in sample_at:
                states.append(z_new)
            z, fz = z_new, fz_new
            continue
        finite = np.isfinite(abs_n)
        update = active & finite
        improved = update & (res_n < best_res)
        now_converged = update & (res_n <= tol)
        now_nonfinite = active & ~finite
        now_diverged = update & (abs_n > diverge_at)
        stopped = now_converged | now_nonfinite | now_diverged
        nstep += active
        converged |= now_converged
        nonfinite |= now_nonfinite
        diverged |= now_diverged
        if (improved | ~active).all():
            best_z = z_new
        elif improved.any():
            best_z = _select(on_device(improved), z_new, best_z)
        best_res = np.where(improved, res_n, best_res)
        best_abs = np.where(improved, abs_n, best_abs)
        best_rel = np.where(improved, rel_n, best_rel)
        if history is not None:
            history.append(np.where(update, res_n, history[-1]))
        if stopped.any():
            # A sample that turned NaN/Inf freezes at its last finite iterate.
            frozen_z = _select(on_device(stopped & finite), z_new, frozen_z)
            if now_nonfinite.any():
                frozen_z = _select(on_device(now_nonfinite), z, frozen_z)
            kept_best = _select(on_device(stopped), best_z, kept_best)
            active = active & ~stopped
            n_active = int(active.sum())
            active_t = on_device(active)
        if k in sample_at:
            states.append(_select(active_t, z_new, frozen_z) if n_active < batch else z_new)
        z, fz = z_new, fz_new
    if memory is not None:
        solver.release(memory)
    if n_active < batch:
        best_z = _select(on_device(~active), kept_best, best_z)
    if nonfinite.any():
        status = Status.NONFINITE
    elif diverged.any():
        status = Status.DIVERGED
    elif converged.all():
        status = Status.CONVERGED
    else:
        status = Status.MAX_ITER

    def to_torch(values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(values)).to(device)

    return Solution(
        z=best_z,
        status=status,
        converged=to_torch(converged),
        nstep=to_torch(nstep),
        residual=to_torch(best_res),
        abs_residual=to_torch(best_abs),
        rel_residual=to_torch(best_rel),
        nfev=nfev,
        stop_mode=stop_mode,
        tol=float(tol),
        trace=to_torch(np.stack(history, axis=1)) if history is not None else None,
        states=states if sample_at else None,
    )
