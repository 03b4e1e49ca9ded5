"""JAX solvers on (B, D) arrays, one file each on the interface in base.py."""

from __future__ import annotations

from ...core import DEFAULTS, convert
from .anderson import Anderson
from .base import Solver, Status, StatusCode, iterate, residuals
from .broyden import Broyden, BroydenState
from .fixed_point import FixedPoint
from .newton_krylov import NewtonKrylov
from .solution import Solution, SolverError

#: Solver names accepted wherever a solver is asked for (the same as the torch core's).
SOLVERS: dict[str, type[Solver]] = {
    cls.name: cls for cls in (FixedPoint, Anderson, Broyden, NewtonKrylov)
}


def make_solver(spec) -> Solver:
    """Turn a solver name, or a solver object of either backend, into a JAX solver.

    An object converts by its option record, field by field, so one configuration serves both
    backends.

    >>> import deqkit as dk
    >>> make_solver(dk.Anderson(m=3))
    Anderson(m=3, lam=0.0001, damping=1.0)
    """
    return convert(spec, SOLVERS, "solver", Solver)


__all__ = [
    "DEFAULTS",
    "SOLVERS",
    "Anderson",
    "Broyden",
    "BroydenState",
    "FixedPoint",
    "NewtonKrylov",
    "Solution",
    "Solver",
    "SolverError",
    "Status",
    "StatusCode",
    "iterate",
    "make_solver",
    "residuals",
]
