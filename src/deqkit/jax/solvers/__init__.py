"""JAX solvers on (B, D) arrays, one file each on the interface in base.py."""

from __future__ import annotations

from dataclasses import fields

from ...solvers import Solver as _TorchSolver
from .anderson import Anderson
from .base import DEFAULTS, Solution, Solver, SolverError, Status, iterate, residuals
from .broyden import Broyden
from .fixed_point import FixedPoint
from .newton_krylov import NewtonKrylov

#: Solver names accepted wherever a solver is asked for (the same as the torch core's).
SOLVERS: dict[str, type[Solver]] = {
    cls.name: cls for cls in (FixedPoint, Anderson, Broyden, NewtonKrylov)
}


def make_solver(spec) -> Solver:
    """Turn a solver name, JAX solver object or torch ``deqkit`` solver object into a JAX solver.

    A torch options object converts field by field, so one configuration serves both backends.

    >>> import deqkit as dk
    >>> make_solver(dk.Anderson(m=3))
    Anderson(m=3, lam=0.0001, damping=1.0)
    """
    if isinstance(spec, Solver):
        return spec
    if isinstance(spec, str):
        if spec not in SOLVERS:
            raise ValueError(f"unknown solver {spec!r}; choose one of {sorted(SOLVERS)}")
        return SOLVERS[spec]()
    if isinstance(spec, _TorchSolver) and getattr(spec, "name", None) in SOLVERS:
        return SOLVERS[spec.name](**{f.name: getattr(spec, f.name) for f in fields(spec)})
    raise TypeError(
        f"solver must be a name {sorted(SOLVERS)} or a deqkit solver object, "
        f"got {type(spec).__name__}"
    )


__all__ = [
    "DEFAULTS",
    "SOLVERS",
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
