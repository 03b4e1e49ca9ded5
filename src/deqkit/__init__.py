"""deqkit: deep equilibrium models with exact, fast, tested solvers and implicit gradients.

The PyTorch API is loaded on first use of one of its names, so ``import deqkit.jax`` and
``import deqkit.core`` never import torch.

>>> import torch, deqkit as dk
>>> z, sol = dk.fixed_point(lambda z: 0.5 * z + 1.0, torch.zeros(2, 3), tol=1e-8)
>>> sol.status == dk.Status.CONVERGED
True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .citation import citation
from .core import DEFAULTS, DEQWarning, SolverError, Status

__version__ = "0.1.0"

# Public name -> the submodule (of this package) that defines it, imported when first asked for.
_LAZY = {
    "Implicit": "backward",
    "OneStep": "backward",
    "Phantom": "backward",
    "Shine": "backward",
    "Unrolled": "backward",
    "FixedPointCache": "cache",
    "DEQ": "deq",
    "fixed_point": "deq",
    "solve": "deq",
    "VariationalDropout": "dropout",
    "VariationalDropout2d": "dropout",
    "VariationalDropoutToken": "dropout",
    "reset_dropout": "dropout",
    "fixed_point_correction": "losses",
    "apply_norm": "norm",
    "cached_weights": "norm",
    "remove_norm": "norm",
    "jacobian_penalty": "regularize",
    "spectral_radius": "regularize",
    "Anderson": "solvers",
    "Broyden": "solvers",
    "FixedPoint": "solvers",
    "NewtonKrylov": "solvers",
    "Solution": "solvers",
    "Solver": "solvers",
    "LayerOutputs": "solvers",
    "clear_buffer_pool": "solvers",
    "set_buffer_pool_limit": "solvers",
    "BroydenState": "solvers",
}

if TYPE_CHECKING:  # the names as a type checker and an editor see them
    from .backward import Implicit, OneStep, Phantom, Shine, Unrolled
    from .cache import FixedPointCache
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
        BroydenState,
        FixedPoint,
        LayerOutputs,
        NewtonKrylov,
        Solution,
        Solver,
        clear_buffer_pool,
        set_buffer_pool_limit,
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'deqkit' has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
    except ModuleNotFoundError as err:
        if err.name != "torch" and not str(err).startswith("No module named 'torch"):
            raise
        raise ModuleNotFoundError(
            f"deqkit.{name} is part of the PyTorch API, which needs torch: "
            "pip install 'deqkit[torch]' (deqkit.jax and deqkit.core work without it)",
            name="torch",
        ) from err
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "DEFAULTS",
    "DEQ",
    "Anderson",
    "Broyden",
    "BroydenState",
    "DEQWarning",
    "FixedPoint",
    "FixedPointCache",
    "Implicit",
    "LayerOutputs",
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
    "set_buffer_pool_limit",
    "cached_weights",
    "citation",
    "clear_buffer_pool",
    "fixed_point",
    "fixed_point_correction",
    "jacobian_penalty",
    "remove_norm",
    "reset_dropout",
    "spectral_radius",
    "solve",
]
