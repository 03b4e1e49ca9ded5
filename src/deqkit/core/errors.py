"""The warning, the base error and the failure policy text shared by both backends."""

from __future__ import annotations

from typing import Any

from .status import Status

__all__ = ["DEQWarning", "SolverError", "failure_message"]


class DEQWarning(UserWarning):
    """Warning category for solves that end without converging (``on_failure="warn"``)."""


def failure_message(what: str, status: Status, detail: str) -> str:
    """The one line both backends print for a solve that did not converge.

    >>> failure_message("forward solve", Status.MAX_ITER, "...")
    'forward solve ended with MAX_ITER: max_iter was reached before every sample reached the tolerance; ...'
    """  # noqa: E501
    return f"{what} ended with {status.name}: {status.message}; {detail}"


class SolverError(RuntimeError):
    """Raised under ``on_failure="raise"`` when a solve does not converge (either backend).

    ``solution`` is the backend's Solution, ``status`` its :class:`Status`.

    >>> class Sol:  # any object with a status code
    ...     status = 1
    >>> str(SolverError(Sol(), "adjoint solve")).split(";")[0]
    'adjoint solve ended with MAX_ITER: max_iter was reached before every sample reached the tolerance'
    """  # noqa: E501

    def __init__(self, solution: Any, what: str = "forward solve"):
        self.solution = solution
        self.status = Status(int(solution.status))
        super().__init__(failure_message(what, self.status, repr(solution)))
