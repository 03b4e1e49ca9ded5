"""deqkit.jax: the JAX backend, with the solver names, options, defaults and Solution fields of
the PyTorch core. f receives its parameters by closure; see :func:`fixed_point`.

>>> import jax.numpy as jnp
>>> import deqkit.jax as dkj
>>> sol = dkj.solve(lambda z: 0.5 * z + 1.0, jnp.zeros((2, 3)), "fixed_point", tol=1e-6)
>>> sol.status, bool(sol.status == dkj.Status.CONVERGED)
(StatusCode(CONVERGED), True)
"""

from .backward import Implicit, OneStep, Phantom, Unrolled
from .deq import fixed_point, solve
from .layer import DEQ, unroll
from .losses import fixed_point_correction, jacobian_penalty, skip_loss
from .solvers import (
    Anderson,
    Broyden,
    FixedPoint,
    NewtonKrylov,
    Solution,
    Solver,
    SolverError,
    Status,
    StatusCode,
)
from .solvers.solution import LayerOutputs

__all__ = [
    "Anderson",
    "Broyden",
    "DEQ",
    "FixedPoint",
    "Implicit",
    "LayerOutputs",
    "NewtonKrylov",
    "OneStep",
    "Phantom",
    "Solution",
    "Solver",
    "SolverError",
    "Status",
    "StatusCode",
    "Unrolled",
    "fixed_point",
    "fixed_point_correction",
    "jacobian_penalty",
    "skip_loss",
    "solve",
    "unroll",
]
