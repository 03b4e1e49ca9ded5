"""Option records shared by both backends: the fields, defaults and validation of each solver and
backward, declared once. ``deqkit.Anderson`` (torch) and ``deqkit.jax.Anderson`` subclass the same
record and add only their algorithm, so one configuration means the same thing everywhere, and an
object of either backend converts to the other by its record (:func:`convert`).

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

from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, TypeVar

from .._validate import check_bool, check_choice, check_float, check_int
from .defaults import (
    BROYDEN_UPDATES,
    DEFAULTS,
    JVP_MODES,
    STOP_MODES,
    BroydenUpdate,
    JvpMode,
    StopMode,
)

__all__ = [
    "BACKWARD_OPTIONS",
    "BROYDEN_UPDATES",
    "JVP_MODES",
    "SOLVER_OPTIONS",
    "STOP_MODES",
    "AndersonOptions",
    "BroydenOptions",
    "FixedPointOptions",
    "ImplicitOptions",
    "NewtonKrylovOptions",
    "OneStepOptions",
    "PhantomOptions",
    "ShineOptions",
    "UnrolledOptions",
    "check_compatible",
    "convert",
    "record_of",
]


_Opts = TypeVar("_Opts", bound="ImplicitOptions")


def _name(record: Any, field: str) -> str:
    return f"{type(record).__name__}.{field}"


def _solver_like(obj: Any) -> bool:
    # A user-written solver on either backend's interface: it has init and step.
    return callable(getattr(obj, "init", None)) and callable(getattr(obj, "step", None))


def _check_damping(record: Any) -> None:
    check_float(_name(record, "damping"), record.damping, minimum=0.0, maximum=1.0, strict_min=True)


@dataclass(frozen=True)
class FixedPointOptions:
    """Damped Picard iteration: ``damping`` τ in (0, 1]."""

    name: ClassVar[str] = "fixed_point"
    damping: float = 1.0

    def __post_init__(self):
        _check_damping(self)


@dataclass(frozen=True)
class AndersonOptions:
    """Anderson acceleration: history ``m``, relative regularisation ``lam``, ``damping``."""

    name: ClassVar[str] = "anderson"
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

    name: ClassVar[str] = "broyden"
    #: 50 = the default max_iter, so a default solve never drops an update: on the ρ≈0.99
    #: benchmark (d) a ring that wraps loses convergence (benchmarks/stopping.py memory).
    memory: int = 50
    line_search: bool = False
    max_halvings: int = 4
    update: BroydenUpdate = "bad"

    def __post_init__(self):
        check_int(_name(self, "memory"), self.memory, minimum=1)
        check_choice(_name(self, "update"), self.update, BROYDEN_UPDATES)
        check_bool(_name(self, "line_search"), self.line_search)
        check_int(_name(self, "max_halvings"), self.max_halvings, minimum=0)


@dataclass(frozen=True)
class NewtonKrylovOptions:
    """Jacobian-free Newton–Krylov: GMRES size and tolerance, line search, JVP mode."""

    name: ClassVar[str] = "newton_krylov"
    krylov_dim: int = 20
    krylov_tol: float = 1e-4
    line_search: bool = True
    max_halvings: int = 4
    jvp: JvpMode = "autodiff"

    def __post_init__(self):
        check_int(_name(self, "krylov_dim"), self.krylov_dim, minimum=1)
        check_float(_name(self, "krylov_tol"), self.krylov_tol, minimum=0.0, strict_min=True)
        check_bool(_name(self, "line_search"), self.line_search)
        check_int(_name(self, "max_halvings"), self.max_halvings, minimum=0)
        check_choice(_name(self, "jvp"), self.jvp, JVP_MODES)


@dataclass(frozen=True)
class ImplicitOptions:
    """Implicit backward: the adjoint ``solver`` (checked by each backend), ``tol``,
    ``max_iter`` and ``stop_mode``. ``tol``/``max_iter`` left at None follow the forward solve's
    (:meth:`for_forward`), so the gradient is as accurate as the fixed point."""

    name: ClassVar[str] = "implicit"
    solver: Any = "anderson"
    tol: float | None = DEFAULTS["adjoint_tol"]
    max_iter: int | None = DEFAULTS["adjoint_max_iter"]
    stop_mode: StopMode = "rel"

    def for_forward(self: _Opts, tol: float, max_iter: int) -> _Opts:
        """This record with ``tol``/``max_iter`` left at None set to the forward solve's.

        >>> ImplicitOptions().for_forward(1e-8, 100).tol, ImplicitOptions(tol=1e-3).for_forward(1e-8, 100).tol
        (1e-08, 0.001)
        """  # noqa: E501
        return replace(
            self,
            tol=tol if self.tol is None else self.tol,
            max_iter=max_iter if self.max_iter is None else self.max_iter,
        )

    def __post_init__(self):
        if isinstance(self.solver, str):
            check_choice(_name(self, "solver"), self.solver, tuple(SOLVER_OPTIONS))
        elif record_of(self.solver) is None and not _solver_like(self.solver):
            raise TypeError(
                f"{_name(self, 'solver')} must be a solver name {tuple(SOLVER_OPTIONS)} or a "
                f"deqkit solver object, got {type(self.solver).__name__}"
            )
        if self.tol is not None:
            check_float(_name(self, "tol"), self.tol, minimum=0.0, strict_min=True)
        if self.max_iter is not None:
            check_int(_name(self, "max_iter"), self.max_iter, minimum=1)
        check_choice(_name(self, "stop_mode"), self.stop_mode, STOP_MODES)


@dataclass(frozen=True)
class PhantomOptions:
    """Phantom gradient: ``steps`` differentiated damped steps with ``damping`` τ."""

    name: ClassVar[str] = "phantom"
    steps: int = 5
    damping: float = 1.0

    def __post_init__(self):
        check_int(_name(self, "steps"), self.steps, minimum=1)
        _check_damping(self)


@dataclass(frozen=True)
class OneStepOptions:
    """Jacobian-free (one-step) backward: no options."""

    name: ClassVar[str] = "one_step"


@dataclass(frozen=True)
class UnrolledOptions:
    """Backpropagation through every forward iteration: no options."""

    name: ClassVar[str] = "unrolled"


@dataclass(frozen=True)
class ShineOptions:
    """SHINE backward: ``refine`` adjoint fixed-point steps after the inverse estimate."""

    name: ClassVar[str] = "shine"
    #: The forward solvers whose final state carries the inverse estimate SHINE reads.
    requires_solver: ClassVar[tuple[str, ...]] = ("broyden",)
    refine: int = 0

    def __post_init__(self):
        check_int(_name(self, "refine"), self.refine, minimum=0)


#: Solver name -> option record (the backends subclass these).
SOLVER_OPTIONS: dict[str, type] = {
    r.name: r for r in (FixedPointOptions, AndersonOptions, BroydenOptions, NewtonKrylovOptions)
}
#: Backward name -> option record.
BACKWARD_OPTIONS: dict[str, type] = {
    r.name: r
    for r in (ImplicitOptions, PhantomOptions, OneStepOptions, UnrolledOptions, ShineOptions)
}
_RECORDS = (*SOLVER_OPTIONS.values(), *BACKWARD_OPTIONS.values())

T = TypeVar("T")


def record_of(obj: Any) -> type | None:
    """The option record an object (of either backend) is built on, or None.

    >>> record_of(AndersonOptions(m=2)).__name__, record_of("anderson")
    ('AndersonOptions', None)
    """
    for record in _RECORDS:
        if isinstance(obj, record):
            return record
    return None


def convert(spec: Any, registry: dict[str, type[T]], kind: str, base: type | None = None) -> T:
    """A backend object from a name, an object of that backend, or any object with the same
    option record (e.g. the other backend's): fields copied one by one.

    ``registry`` maps names to the backend's classes; ``kind`` ("solver" or "backward") names
    the argument in errors; an instance of ``base`` (the backend's interface, for user-written
    solvers) is returned as it is.

    >>> convert(AndersonOptions(m=3), {"anderson": AndersonOptions}, "solver")
    AndersonOptions(m=3, lam=0.0001, damping=1.0)
    >>> convert("newton", {"anderson": AndersonOptions}, "solver")
    Traceback (most recent call last):
    ...
    ValueError: unknown solver 'newton'; choose one of ['anderson']
    """
    if isinstance(spec, (*registry.values(), *([base] if base else []))):
        return spec  # type: ignore[return-value]
    if isinstance(spec, str):
        if spec not in registry:
            raise ValueError(f"unknown {kind} {spec!r}; choose one of {sorted(registry)}")
        return registry[spec]()
    record: Any = record_of(spec)
    if record is not None and record.name in registry:
        return registry[record.name](**{f.name: getattr(spec, f.name) for f in fields(record)})
    if record is not None:
        raise ValueError(f"{kind} {record.name!r} is not available in this backend")
    raise TypeError(
        f"{kind} must be a name {sorted(registry)} or a deqkit {kind} object, "
        f"got {type(spec).__name__}"
    )


def check_compatible(solver: Any, backward: Any) -> None:
    """Reject a backward that cannot work with the forward solver (e.g. SHINE needs Broyden).

    Both may be names or objects of either backend.

    >>> check_compatible("anderson", "shine")
    Traceback (most recent call last):
    ...
    ValueError: backward 'shine' reads the forward solver's state of ('broyden',); got solver 'anderson'
    """  # noqa: E501
    back = backward if isinstance(backward, str) else getattr(record_of(backward), "name", None)
    needs = getattr(BACKWARD_OPTIONS.get(back or ""), "requires_solver", None)
    if not needs:
        return
    name = solver if isinstance(solver, str) else getattr(record_of(solver), "name", None)
    if name not in needs:
        raise ValueError(
            f"backward {back!r} reads the forward solver's state of {needs}; got solver {name!r}"
        )
