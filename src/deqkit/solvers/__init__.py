"""Root and fixed-point solvers on (B, D) matrices, one file each on the interface in base.py."""

from __future__ import annotations

from ..core import DEFAULTS, STOP_MODES, SolverError, Status, convert
from ._cpu import clear_buffer_pool, set_buffer_pool_limit, to_host
from .anderson import Anderson
from .base import Solver, residuals
from .broyden import Broyden, BroydenState
from .fixed_point import FixedPoint
from .loop import iterate
from .newton_krylov import NewtonKrylov
from .solution import LayerOutputs, Solution

#: Solver names accepted wherever a solver is asked for.
SOLVERS: dict[str, type[Solver]] = {
    cls.name: cls for cls in (FixedPoint, Anderson, Broyden, NewtonKrylov)
}


def make_solver(spec) -> Solver:
    """Turn a solver name, or a solver object of either backend, into a torch solver.

    An object converts by its option record, field by field (a ``deqkit.jax`` solver included).

    >>> make_solver("broyden")
    Broyden(memory=50, line_search=False, max_halvings=4, update='bad')
    """
    return convert(spec, SOLVERS, "solver", Solver)


__all__ = [
    "DEFAULTS",
    "SOLVERS",
    "STOP_MODES",
    "Anderson",
    "Broyden",
    "BroydenState",
    "FixedPoint",
    "LayerOutputs",
    "NewtonKrylov",
    "Solution",
    "Solver",
    "SolverError",
    "Status",
    "clear_buffer_pool",
    "iterate",
    "make_solver",
    "residuals",
    "set_buffer_pool_limit",
    "to_host",
]
