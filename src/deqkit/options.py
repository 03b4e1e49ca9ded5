"""Option records shared by both backends: the fields, defaults and validation of each solver and
backward, declared once. ``deqkit.Anderson`` (torch) and ``deqkit.jax.Anderson`` subclass the same
record and add only their algorithm, so one configuration means the same thing everywhere.

This module imports neither torch nor jax.

>>> AndersonOptions(m=3)
AndersonOptions(m=3, lam=0.0001, damping=1.0)
>>> import deqkit as dk
>>> dk.Anderson(m=0)  # the backend class reports its own name
Traceback (most recent call last):
...
ValueError: Anderson.m must be >= 1, got 0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._validate import check_bool, check_choice, check_float, check_int

__all__ = [
    "BROYDEN_UPDATES",
    "JVP_MODES",
    "STOP_MODES",
    "AndersonOptions",
    "BroydenOptions",
    "FixedPointOptions",
    "ImplicitOptions",
    "NewtonKrylovOptions",
    "PhantomOptions",
]

STOP_MODES = ("rel", "abs")
JVP_MODES = ("autodiff", "finite_difference")
BROYDEN_UPDATES = ("good", "bad")


def _name(record: Any, field: str) -> str:
    return f"{type(record).__name__}.{field}"


def _check_damping(record: Any) -> None:
    check_float(_name(record, "damping"), record.damping, minimum=0.0, maximum=1.0, strict_min=True)


@dataclass(frozen=True)
class FixedPointOptions:
    """Damped Picard iteration: ``damping`` τ in (0, 1]."""

    damping: float = 1.0

    def __post_init__(self):
        _check_damping(self)


@dataclass(frozen=True)
class AndersonOptions:
    """Anderson acceleration: history ``m``, relative regularisation ``lam``, ``damping``."""

    m: int = 5
    lam: float = 1e-4
    damping: float = 1.0

    def __post_init__(self):
        check_int(_name(self, "m"), self.m, minimum=1)
        check_float(_name(self, "lam"), self.lam, minimum=0.0)
        _check_damping(self)


@dataclass(frozen=True)
class BroydenOptions:
    """Limited-memory Broyden: ``memory`` rank-one terms, optional per-sample line search, and
    the secant ``update``: "good" (Broyden's first method) or "bad" (his second method)."""

    memory: int = 30
    line_search: bool = False
    max_halvings: int = 4
    update: str = "bad"

    def __post_init__(self):
        check_int(_name(self, "memory"), self.memory, minimum=1)
        check_choice(_name(self, "update"), self.update, BROYDEN_UPDATES)
        check_bool(_name(self, "line_search"), self.line_search)
        check_int(_name(self, "max_halvings"), self.max_halvings, minimum=0)


@dataclass(frozen=True)
class NewtonKrylovOptions:
    """Jacobian-free Newton–Krylov: GMRES size and tolerance, line search, JVP mode."""

    krylov_dim: int = 20
    krylov_tol: float = 1e-4
    line_search: bool = True
    max_halvings: int = 4
    jvp: str = "autodiff"

    def __post_init__(self):
        check_int(_name(self, "krylov_dim"), self.krylov_dim, minimum=1)
        check_float(_name(self, "krylov_tol"), self.krylov_tol, minimum=0.0, strict_min=True)
        check_bool(_name(self, "line_search"), self.line_search)
        check_int(_name(self, "max_halvings"), self.max_halvings, minimum=0)
        check_choice(_name(self, "jvp"), self.jvp, JVP_MODES)


@dataclass(frozen=True)
class ImplicitOptions:
    """Implicit backward: the adjoint ``solver`` (checked by each backend), ``tol``,
    ``max_iter`` and ``stop_mode``."""

    solver: Any = "anderson"
    tol: float = 1e-6
    max_iter: int = 50
    stop_mode: str = "rel"

    def __post_init__(self):
        check_float(_name(self, "tol"), self.tol, minimum=0.0, strict_min=True)
        check_int(_name(self, "max_iter"), self.max_iter, minimum=1)
        check_choice(_name(self, "stop_mode"), self.stop_mode, STOP_MODES)


@dataclass(frozen=True)
class PhantomOptions:
    """Phantom gradient: ``steps`` differentiated damped steps with ``damping`` τ."""

    steps: int = 5
    damping: float = 1.0

    def __post_init__(self):
        check_int(_name(self, "steps"), self.steps, minimum=1)
        _check_damping(self)
