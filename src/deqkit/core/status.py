"""How a solve ended: the status codes both backends report, with their names and messages."""

from __future__ import annotations

import enum

__all__ = ["Status"]


class Status(enum.IntEnum):
    """How a solve ended. Ordered by severity: a batch reports its worst sample.

    An ``IntEnum`` (it compares equal to its code) that prints its name on every Python:
    ``str``, ``format`` and f-strings give ``NONFINITE``, never ``3``.

    >>> s = Status.NONFINITE
    >>> str(s), f"{s}", repr(s), int(s)
    ('NONFINITE', 'NONFINITE', 'Status.NONFINITE', 3)
    >>> s.message
    'NaN or Inf appeared in z or f(z); the best finite iterate was kept'
    """

    CONVERGED = 0
    MAX_ITER = 1
    DIVERGED = 2
    NONFINITE = 3

    # Python 3.11 made IntEnum print its value; a status is read by people, so it prints its name.
    def __str__(self) -> str:
        return self.name

    def __format__(self, spec: str) -> str:
        return format(self.name, spec)

    def __repr__(self) -> str:
        return f"Status.{self.name}"

    @property
    def message(self) -> str:
        """One sentence saying what the status means."""
        return _MESSAGES[self]


_MESSAGES = {
    Status.CONVERGED: "every sample reached the tolerance",
    Status.MAX_ITER: "max_iter was reached before every sample reached the tolerance",
    Status.DIVERGED: "the residual grew past divergence_ratio times its initial value",
    Status.NONFINITE: "NaN or Inf appeared in z or f(z); the best finite iterate was kept",
}
