"""The solver interface every torch solver implements, and the residuals they share.

A solver is a small frozen dataclass (its fields are its options, from :mod:`deqkit.core.options`)
with two methods:

* ``init(z, fz)`` returns the solver's memory after the first evaluation ``fz = f(z)``;
* ``step(evaluate, z, fz, memory, active)`` proposes the next iterate, evaluates it through
  ``evaluate`` (which counts f-evaluations) and returns ``(z_new, fz_new, memory)``;

and optional hooks: ``mixes_rows`` (whether a step assembles ``fz_new`` from several
evaluations), ``residual(memory)`` (``f(z) − z`` when at hand), ``final_state(memory)`` (what
``Solution.state`` hands on) and ``release(memory)`` (buffers back to the pool).

Everything else -- per-sample stopping and freezing, best-iterate tracking, divergence and NaN
detection, traces and statistics -- lives once in :func:`~deqkit.solvers.iterate` (``loop.py``),
so a new solver is one short file and behaves like every other. Solvers see only (B, D) matrices,
never autograd or modules.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from ..core import DEFAULTS, STOP_MODES, SolverError, Status
from ._cpu import to_host
from .solution import LayerOutputs, Solution

__all__ = [
    "DEFAULTS",
    "STOP_MODES",
    "Evaluate",
    "LayerOutputs",
    "Solution",
    "Solver",
    "SolverError",
    "Status",
    "residuals",
    "to_host",
]

Evaluate = Callable[[torch.Tensor], torch.Tensor]


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
        The loop never modifies ``active`` in place: it hands a new tensor when samples stop, so
        a solver may cache what it derives from one (Broyden reads its mask once per change).
        The loop keeps ``z_new`` and ``fz_new`` without copying them: never write into them (or
        return views of buffers the solver writes into) later.
        """

    @property
    def mixes_rows(self) -> bool:
        """Whether a step may return ``fz_new`` assembled from rows of several evaluations of f
        (a per-sample line search): then ``fz_new`` is ``f(z_new)`` only for f that does not
        couple samples, and the loop evaluates f once more at the returned z to report the
        truth. False by default."""
        return False

    def residual(self, memory: Any) -> torch.Tensor | None:
        """``f(z) − z`` for the iterate the last step returned, when the solver has it at hand
        (the loop then skips recomputing it); ``None`` otherwise."""
        return None

    def final_state(self, memory: Any) -> Any:
        """What the solver hands on in ``Solution.state`` when the solve keeps it (e.g. an
        inverse-Jacobian estimate); None by default. Called once, after the last step."""
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
