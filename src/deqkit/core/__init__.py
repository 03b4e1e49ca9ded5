"""The shared core of both backends; imports neither torch nor jax.

Status codes with names and messages, defaults and string choices, the registries of solver and
backward names, the option records with their validation and cross-backend conversion, the
warning category and the base error. ``deqkit`` (PyTorch) and ``deqkit.jax`` build on it.

>>> from deqkit import core
>>> core.Status(3), core.DEFAULTS["max_iter"], "shine" in core.BACKWARD_NAMES
(Status.NONFINITE, 50, True)
"""

from .defaults import (
    BACKWARD_NAMES,
    BROYDEN_UPDATES,
    DEFAULTS,
    FAILURE_POLICIES,
    JVP_MODES,
    SOLVER_NAMES,
    STOP_MODES,
    STOP_SCOPES,
    BackwardName,
    BroydenUpdate,
    FailurePolicy,
    JvpMode,
    SolverName,
    StopMode,
    StopScope,
    stop_residual,
)
from .errors import DEQWarning, SolverError, failure_message
from .options import (
    BACKWARD_OPTIONS,
    SOLVER_OPTIONS,
    AndersonOptions,
    BroydenOptions,
    FixedPointOptions,
    ImplicitOptions,
    NewtonKrylovOptions,
    OneStepOptions,
    PhantomOptions,
    ShineOptions,
    UnrolledOptions,
    check_compatible,
    convert,
    record_of,
)
from .status import Status

__all__ = [
    "BACKWARD_NAMES",
    "BACKWARD_OPTIONS",
    "BROYDEN_UPDATES",
    "DEFAULTS",
    "FAILURE_POLICIES",
    "JVP_MODES",
    "SOLVER_NAMES",
    "SOLVER_OPTIONS",
    "STOP_MODES",
    "STOP_SCOPES",
    "AndersonOptions",
    "BackwardName",
    "BroydenOptions",
    "BroydenUpdate",
    "DEQWarning",
    "FailurePolicy",
    "FixedPointOptions",
    "ImplicitOptions",
    "JvpMode",
    "NewtonKrylovOptions",
    "OneStepOptions",
    "PhantomOptions",
    "ShineOptions",
    "SolverError",
    "SolverName",
    "Status",
    "StopMode",
    "StopScope",
    "UnrolledOptions",
    "check_compatible",
    "convert",
    "failure_message",
    "record_of",
    "stop_residual",
]
