"""The JAX solve's result: :class:`Solution` and its jit-safe :class:`StatusCode`, both pytrees."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ...core import DEFAULTS, Status
from ...core import SolverError as _CoreSolverError

__all__ = ["LayerOutputs", "Solution", "SolverError", "StatusCode"]


def _code(value: Any) -> Any:
    return value.code if isinstance(value, StatusCode) else value


@jax.tree_util.register_pytree_node_class
class StatusCode:
    """A solve's :class:`~deqkit.core.Status` as an int32 array, usable under ``jax.jit``.

    Compares with a :class:`Status` (or int) inside traced code, converts with ``int()`` and
    ``Status(int(code))`` when concrete, and prints its name, also from ``jax.debug.print``
    (the host then receives a concrete code). Under ``jax.vmap`` it holds one code per instance.

    >>> import jax, jax.numpy as jnp
    >>> code = StatusCode(jnp.int32(1))
    >>> code, code.name, bool(code == Status.MAX_ITER), int(code)
    (StatusCode(MAX_ITER), 'MAX_ITER', True, 1)
    >>> jax.jit(lambda c: c == Status.MAX_ITER)(code)
    Array(True, dtype=bool)
    """

    __slots__ = ("code",)

    def __init__(self, code: Any):
        self.code = code

    def tree_flatten(self):
        return (self.code,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(children[0])

    def __eq__(self, other: object) -> Any:
        return self.code == _code(other)

    def __ne__(self, other: object) -> Any:
        return self.code != _code(other)

    __hash__ = None  # type: ignore[assignment]  # compares like an array, elementwise

    def __int__(self) -> int:
        return int(self.code)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.code, dtype=dtype)

    def __jax_array__(self):
        return jnp.asarray(self.code)

    @property
    def status(self) -> Status:
        """The :class:`Status` (concrete codes only; the worst one under vmap)."""
        return Status(int(np.max(np.asarray(self.code))))

    @property
    def name(self) -> str:
        return self.status.name

    @property
    def message(self) -> str:
        return self.status.message

    def _text(self) -> str:
        try:
            codes = np.asarray(self.code)
        except (
            TypeError,
            jax.errors.ConcretizationTypeError,
            jax.errors.TracerArrayConversionError,
        ):
            return "<traced>"
        if codes.ndim == 0:
            return Status(int(codes)).name
        return "[" + ", ".join(Status(int(c)).name for c in codes.ravel()) + "]"

    def __repr__(self) -> str:
        return f"StatusCode({self._text()})"

    def __str__(self) -> str:
        return self._text()

    def __format__(self, spec: str) -> str:
        return format(self._text(), spec)


@dataclass(frozen=True)
class LayerOutputs:
    """What the layer (:class:`deqkit.jax.DEQ`) computes besides the solve, each None unless
    asked for: ``states`` (k states along the solver path, for fixed-point correction),
    ``jac_loss`` (the Jacobian penalty) and ``skip_loss`` (the Skip-DEQ initialiser's loss).

    >>> LayerOutputs()
    LayerOutputs(states=None, jac_loss=None, skip_loss=None)
    """

    states: list | None = None
    jac_loss: jax.Array | None = None
    skip_loss: jax.Array | None = None


jax.tree_util.register_dataclass(
    LayerOutputs, data_fields=["states", "jac_loss", "skip_loss"], meta_fields=[]
)


@dataclass(frozen=True, repr=False)
class Solution:
    """Result of a solve, a pytree (it passes through ``jax.jit`` and ``jax.vmap``).

    Fields (per-sample ones have shape (B,)):

    * ``z``: each sample's lowest-residual iterate, in the structure of z0;
    * ``status``: the batch's worst :class:`StatusCode`; ``converged``: per sample;
    * ``nstep``: iterations each sample ran (the evaluation of f(z0) is iteration 1);
    * ``residual`` in ``stop_mode``, ``abs_residual``, ``rel_residual`` at ``z``;
    * ``nfev``: all calls of f; ``trace`` (B, max_iter): per-iteration residuals when asked for,
      NaN after the last iteration;
    * ``state``: the solver's final state when the solve was asked to keep it (else None);
    * ``outputs``: the layer's :class:`LayerOutputs`; ``aux``: with ``has_aux=True``, the
      auxiliary output of f at the returned z (else None);
    * ``stop_mode``, ``tol``: static, as solved.
    """

    z: Any
    status: StatusCode
    converged: jax.Array
    nstep: jax.Array
    residual: jax.Array
    abs_residual: jax.Array
    rel_residual: jax.Array
    nfev: jax.Array
    trace: jax.Array | None = None
    state: Any = None
    outputs: LayerOutputs = LayerOutputs()
    aux: Any = None
    stop_mode: str = "rel"
    tol: float = DEFAULTS["tol"]

    def __post_init__(self):
        if not isinstance(self.status, StatusCode):
            object.__setattr__(self, "status", StatusCode(self.status))

    @property
    def success(self) -> jax.Array:
        return self.status == Status.CONVERGED

    @property
    def message(self) -> str:
        """One readable line: the status, its meaning and the numbers (concrete values only)."""
        try:
            status = self.status.status
        except (
            TypeError,
            jax.errors.ConcretizationTypeError,
            jax.errors.TracerArrayConversionError,
        ):
            return "traced solution (print it outside jit or through jax.debug.print)"
        n = self.converged.size
        return (
            f"{status.name}: {status.message} ({int(self.converged.sum())}/{n} converged, "
            f"{self.stop_mode} residual {_span(self.residual, '.2e')}, tol {self.tol:.1e})"
        )

    def __repr__(self) -> str:
        try:
            status = self.status.status
            text = (
                f"Solution(status={status.name}, converged={int(self.converged.sum())}/"
                f"{self.converged.size}, nstep={_span(self.nstep)}, "
                f"{self.stop_mode}_residual={_span(self.residual, '.2e')}, tol={self.tol:.1e}, "
                f"nfev={int(self.nfev)})"
            )
        except (
            TypeError,
            jax.errors.ConcretizationTypeError,
            jax.errors.TracerArrayConversionError,
        ):
            text = f"Solution(<traced>, stop_mode={self.stop_mode!r}, tol={self.tol:.1e})"
        return text


jax.tree_util.register_dataclass(
    Solution,
    data_fields=[f.name for f in fields(Solution) if f.name not in ("stop_mode", "tol")],
    meta_fields=["stop_mode", "tol"],
)


def _span(values, fmt: str = "d") -> str:
    lo, hi = np.min(np.asarray(values)).item(), np.max(np.asarray(values)).item()
    return f"{lo:{fmt}}" if lo == hi else f"{lo:{fmt}}..{hi:{fmt}}"


class SolverError(_CoreSolverError):
    """Raised under ``on_failure="raise"``; a :class:`deqkit.SolverError` like the torch one's."""
