"""Root and fixed-point solvers on (B, D) matrices, one file each on the interface in base.py."""

from __future__ import annotations

from .anderson import Anderson
from .base import DEFAULTS, STOP_MODES, Solution, Solver, SolverError, Status, iterate, residuals
from .broyden import Broyden
from .fixed_point import FixedPoint
from .newton_krylov import NewtonKrylov

#: Solver names accepted wherever a solver is asked for.
SOLVERS: dict[str, type[Solver]] = {
    cls.name: cls for cls in (FixedPoint, Anderson, Broyden, NewtonKrylov)
}


def make_solver(spec: str | Solver) -> Solver:
    """Turn a solver name or options object into a solver.

    >>> make_solver("broyden")
    Broyden(memory=30, line_search=False, max_halvings=4, update='bad')
    """
    if isinstance(spec, Solver):
        return spec
    if isinstance(spec, str):
        if spec not in SOLVERS:
            raise ValueError(f"unknown solver {spec!r}; choose one of {sorted(SOLVERS)}")
        return SOLVERS[spec]()
    raise TypeError(
        f"solver must be a name {sorted(SOLVERS)} or a deqkit Solver object, "
        f"got {type(spec).__name__}"
    )


__all__ = [
    "DEFAULTS",
    "SOLVERS",
    "STOP_MODES",
    "Anderson",
    "Broyden",
    "FixedPoint",
    "NewtonKrylov",
    "Solution",
    "Solver",
    "SolverError",
    "Status",
    "iterate",
    "make_solver",
    "residuals",
]
