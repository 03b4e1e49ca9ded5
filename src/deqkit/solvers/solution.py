"""The result of a solve (:class:`Solution`) and what a layer adds to it (:class:`LayerOutputs`)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core import Status, StopMode, StopScope

__all__ = ["LayerOutputs", "Solution"]


@dataclass(frozen=True)
class LayerOutputs:
    """What ``fixed_point`` and ``DEQ`` compute besides the solve, each None unless asked for.

    * ``states``: the k states along the solver path (``n_states=k > 1``), each carrying a
      gradient, for :func:`~deqkit.fixed_point_correction`; the last is the returned z.
    * ``jac_loss``: the Jacobian penalty (``DEQ(jac_reg_prob=p)``), a differentiable scalar.
    * ``skip_loss``: the Skip-DEQ initialiser loss (``DEQ(init=net)``), a differentiable scalar.

    >>> LayerOutputs()
    LayerOutputs(states=None, jac_loss=None, skip_loss=None)
    """

    states: list | None = None
    jac_loss: torch.Tensor | None = None
    skip_loss: torch.Tensor | None = None


@dataclass(frozen=True, repr=False)
class Solution:
    """Result of a solve, immutable. Per-sample fields have shape (B,).

    Fields:

    * ``z``: the equilibrium, in the structure of z0. From :func:`~deqkit.solve` each sample's
      lowest-residual iterate; from :func:`~deqkit.fixed_point` and ``DEQ`` the very z they
      return, carrying the gradient of the chosen backward.
    * ``status``: the batch's worst :class:`~deqkit.Status`; ``converged``: per sample.
    * ``nstep``: iterations each sample ran (the evaluation of ``f(z0)`` is iteration 1);
      ``nfev``: all calls of f.
    * ``residual`` (in ``stop_mode``), ``abs_residual``, ``rel_residual``: at each sample's z.
    * ``stop_mode``, ``tol``, ``stop_scope``: as solved. ``trace`` (B, iterations):
      per-iteration residuals when asked for.
    * ``state``: the solver's final state when the solve kept it (``solve(keep_state=True)``, or
      a backward that reads it, such as SHINE), else None. For Broyden a
      :class:`~deqkit.solvers.BroydenState`.
    * ``outputs``: the :class:`LayerOutputs` (sampled states, Jacobian penalty, Skip-DEQ loss).
    * ``aux``: with ``has_aux=True``, the auxiliary output of f at the returned z, else None.
    * ``backward``: filled late, the one field that changes: None until an implicit backward
      runs (``loss.backward()``), then the adjoint solve's own Solution (the latest one, if the
      graph is differentiated more than once).

    >>> import torch, deqkit as dk
    >>> sol = dk.solve(lambda z: 0.5 * z + 1.0, torch.zeros(2, 1), "fixed_point", max_iter=3,
    ...                on_failure="ignore")
    >>> print(sol.message)
    MAX_ITER: max_iter was reached before every sample reached the tolerance (0/2 converged, rel residual 1.43e-01, tol 1.0e-04)
    """  # noqa: E501

    z: Any
    status: Status
    converged: torch.Tensor
    nstep: torch.Tensor
    residual: torch.Tensor
    abs_residual: torch.Tensor
    rel_residual: torch.Tensor
    nfev: int
    stop_mode: StopMode
    tol: float
    trace: torch.Tensor | None = None
    state: Any = None
    outputs: LayerOutputs = field(default_factory=LayerOutputs)
    stop_scope: StopScope = "sample"
    aux: Any = None
    # ``backward`` lives in a box shared by every copy made with ``dataclasses.replace``, so the
    # adjoint solve, which runs later, reaches the Solution the caller holds.
    _backward: list = field(default_factory=lambda: [None], repr=False, compare=False)

    @property
    def backward(self) -> Solution | None:
        """The implicit backward's adjoint Solution, filled late (None until it has run)."""
        return self._backward[0]

    @property
    def success(self) -> bool:
        """Whether every sample converged."""
        return self.status == Status.CONVERGED

    @property
    def message(self) -> str:
        """One readable line: the status, what it means, and the numbers behind it."""
        n = self.converged.numel()
        return (
            f"{self.status.name}: {self.status.message} ({int(self.converged.sum())}/{n} "
            f"converged, {self.stop_mode} residual {_span(self.residual, '.2e')}, "
            f"tol {self.tol:.1e})"
        )

    def _set_backward(self, solution: Solution) -> None:
        # The documented exception to immutability: the adjoint solve runs after the forward.
        self._backward[0] = solution

    # Deprecated spellings of the layer outputs (before they were grouped in ``outputs``).
    @property
    def jac_loss(self) -> torch.Tensor | None:
        """Deprecated: ``sol.outputs.jac_loss``."""
        _deprecated("jac_loss")
        return self.outputs.jac_loss

    @property
    def skip_loss(self) -> torch.Tensor | None:
        """Deprecated: ``sol.outputs.skip_loss``."""
        _deprecated("skip_loss")
        return self.outputs.skip_loss

    @property
    def states(self) -> list | None:
        """Deprecated: ``sol.outputs.states``."""
        _deprecated("states")
        return self.outputs.states

    def __repr__(self) -> str:
        n = self.converged.numel()
        text = (
            f"Solution(status={self.status.name}, converged={int(self.converged.sum())}/{n}, "
            f"nstep={_span(self.nstep)}, {self.stop_mode}_residual={_span(self.residual, '.2e')}, "
            f"tol={self.tol:.1e}, nfev={self.nfev}"
        )
        if self.stop_scope != "sample":
            text += f", stop_scope={self.stop_scope!r}"
        if self.backward is not None:
            text += f", backward={self.backward!r}"
        return text + ")"


def _deprecated(name: str) -> None:
    warnings.warn(
        f"Solution.{name} moved to Solution.outputs.{name}", DeprecationWarning, stacklevel=3
    )


def _span(values: torch.Tensor, fmt: str = "d") -> str:
    if values.numel() == 0:
        return "-"  # an empty batch
    lo, hi = values.min().item(), values.max().item()
    return f"{lo:{fmt}}" if lo == hi else f"{lo:{fmt}}..{hi:{fmt}}"
