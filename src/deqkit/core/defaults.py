"""Defaults, string choices and the registries of solver and backward names, for both backends.

One place decides what ``solve``, ``fixed_point``, ``DEQ``, the JAX backend and the recipe config
use when nothing is said, and which names each accepts.

>>> DEFAULTS["tol"], DEFAULTS["max_iter"], SOLVER_NAMES[:2]
(0.0001, 50, ('fixed_point', 'anderson'))
"""

from __future__ import annotations

from typing import Any, Literal, get_args

__all__ = [
    "BACKWARD_NAMES",
    "BROYDEN_UPDATES",
    "DEFAULTS",
    "FAILURE_POLICIES",
    "JVP_MODES",
    "SOLVER_NAMES",
    "STOP_MODES",
    "STOP_SCOPES",
    "BackwardName",
    "BroydenUpdate",
    "FailurePolicy",
    "JvpMode",
    "SolverName",
    "StopMode",
    "StopScope",
    "stop_residual",
]

#: The stopping rule on a sample's residual r = f(z) - z (norms over all its elements):
#: "rel" ‖r‖ / ‖f(z)‖; "abs" ‖r‖; "mixed" ‖r‖ / (1 + ‖f(z)‖), i.e. ‖r‖ <= tol·(1 + ‖f(z)‖):
#: relative for large states, absolute near z* = 0 (where "rel" can never stop).
StopMode = Literal["rel", "abs", "mixed"]
#: Who stops: "sample" freezes each sample when it reaches tol (f must not couple samples for
#: the frozen ones to stay at their fixed point); "batch" iterates every sample until all do.
StopScope = Literal["sample", "batch"]
FailurePolicy = Literal["warn", "raise", "ignore"]
JvpMode = Literal["autodiff", "finite_difference"]
BroydenUpdate = Literal["good", "bad"]
SolverName = Literal["fixed_point", "anderson", "broyden", "newton_krylov"]
BackwardName = Literal["implicit", "phantom", "one_step", "unrolled", "shine"]

STOP_MODES: tuple[str, ...] = get_args(StopMode)
STOP_SCOPES: tuple[str, ...] = get_args(StopScope)
FAILURE_POLICIES: tuple[str, ...] = get_args(FailurePolicy)
JVP_MODES: tuple[str, ...] = get_args(JvpMode)
BROYDEN_UPDATES: tuple[str, ...] = get_args(BroydenUpdate)
#: Every solver name a backend may accept, in the order the docs list them.
SOLVER_NAMES: tuple[str, ...] = get_args(SolverName)
#: Every backward name; "shine" exists in the torch backend only.
BACKWARD_NAMES: tuple[str, ...] = get_args(BackwardName)

#: Defaults shared by ``solve``, ``fixed_point``, ``DEQ``, the JAX backend and recipes.
DEFAULTS: dict = {
    "solver": "anderson",
    "backward": "implicit",
    "tol": 1e-4,
    "max_iter": 50,
    "stop_mode": "rel",
    "stop_scope": "sample",
    "on_failure": "warn",
    "divergence_ratio": 1e8,
    # The implicit backward's adjoint tol and max_iter: None = the forward solve's own (measured:
    # a fixed 1e-6 left gradients 7.5e-6 off at forward tol 1e-12, and cost 1.0-1.8x the forward
    # at tol 1e-4; benchmarks/adjoint_tol.py).
    "adjoint_tol": None,
    "adjoint_max_iter": None,
}


def stop_residual(stop_mode: str, abs_res: Any, scale: Any) -> Any:
    """The residual ``stop_mode`` compares with tol, from ``abs_res`` = ‖f(z) − z‖ and
    ``scale`` = ‖f(z)‖ (arrays of any backend: only arithmetic is used; the "rel" divisor is
    floored at the dtype's smallest normal number by the caller).

    >>> stop_residual("rel", 1.0, 4.0), stop_residual("abs", 1.0, 4.0), stop_residual("mixed", 1.0, 4.0)
    (0.25, 1.0, 0.2)
    """  # noqa: E501
    if stop_mode == "abs":
        return abs_res
    if stop_mode == "mixed":
        return abs_res / (1 + scale)
    return abs_res / scale
