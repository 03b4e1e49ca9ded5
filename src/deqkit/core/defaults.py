"""Defaults, string choices and the registries of solver and backward names, for both backends.

One place decides what ``solve``, ``fixed_point``, ``DEQ``, the JAX backend and the recipe config
use when nothing is said, and which names each accepts.

>>> DEFAULTS["tol"], DEFAULTS["max_iter"], SOLVER_NAMES[:2]
(0.0001, 50, ('fixed_point', 'anderson'))
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = [
    "BACKWARD_NAMES",
    "BROYDEN_UPDATES",
    "DEFAULTS",
    "FAILURE_POLICIES",
    "JVP_MODES",
    "SOLVER_NAMES",
    "STOP_MODES",
    "BackwardName",
    "BroydenUpdate",
    "FailurePolicy",
    "JvpMode",
    "SolverName",
    "StopMode",
]

StopMode = Literal["rel", "abs"]
FailurePolicy = Literal["warn", "raise", "ignore"]
JvpMode = Literal["autodiff", "finite_difference"]
BroydenUpdate = Literal["good", "bad"]
SolverName = Literal["fixed_point", "anderson", "broyden", "newton_krylov"]
BackwardName = Literal["implicit", "phantom", "one_step", "unrolled", "shine"]

STOP_MODES: tuple[str, ...] = get_args(StopMode)
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
    "on_failure": "warn",
    "divergence_ratio": 1e8,
}
