"""deqkit: deep equilibrium models with exact, fast, tested solvers and implicit gradients.

>>> import torch, deqkit as dk
>>> z, sol = dk.fixed_point(lambda z: 0.5 * z + 1.0, torch.zeros(2, 3), tol=1e-8)
>>> sol.status == dk.Status.CONVERGED
True
"""

from .backward import DEQWarning, Implicit, OneStep, Phantom, Shine, Unrolled
from .cache import FixedPointCache
from .citation import citation
from .deq import DEQ, fixed_point, solve
from .dropout import (
    VariationalDropout,
    VariationalDropout2d,
    VariationalDropoutToken,
    reset_dropout,
)
from .losses import fixed_point_correction
from .norm import apply_norm, cached_weights, remove_norm
from .regularize import jacobian_penalty, spectral_radius
from .solvers import (
    Anderson,
    Broyden,
    FixedPoint,
    NewtonKrylov,
    Solution,
    Solver,
    SolverError,
    Status,
)

__version__ = "0.1.0"

__all__ = [
    "DEQ",
    "Anderson",
    "Broyden",
    "DEQWarning",
    "FixedPoint",
    "FixedPointCache",
    "Implicit",
    "NewtonKrylov",
    "OneStep",
    "Phantom",
    "Shine",
    "Solution",
    "Solver",
    "SolverError",
    "Status",
    "Unrolled",
    "VariationalDropout",
    "VariationalDropout2d",
    "VariationalDropoutToken",
    "apply_norm",
    "cached_weights",
    "citation",
    "fixed_point",
    "fixed_point_correction",
    "jacobian_penalty",
    "remove_norm",
    "reset_dropout",
    "spectral_radius",
    "solve",
]
