"""The failure policy of the torch backend (same policies and messages as the JAX one)."""

from __future__ import annotations

import warnings

from ..core import DEQWarning, SolverError, Status, failure_message
from .solution import Solution

__all__ = ["report_failure"]


def report_failure(solution: Solution, on_failure: str, what: str) -> None:
    """Apply ``on_failure`` ("warn", "raise", "ignore") to a finished solve (nothing happens
    when it converged).

    >>> import torch, deqkit as dk
    >>> sol = dk.solve(lambda z: 0.5 * z + 1.0, torch.zeros(1, 1), max_iter=2, on_failure="ignore")
    >>> report_failure(sol, "raise", "forward solve")
    Traceback (most recent call last):
    ...
    deqkit.core.errors.SolverError: forward solve ended with MAX_ITER: ...
    """
    if solution.status == Status.CONVERGED or on_failure == "ignore":
        return
    if on_failure == "raise":
        raise SolverError(solution, what)
    warnings.warn(failure_message(what, solution.status, repr(solution)), DEQWarning, stacklevel=3)
