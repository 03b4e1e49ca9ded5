"""``IncrementalRNN``: the sequence model around :class:`IncrementalCell`, three ways to get h_t.

- ``variant="euler"``: K explicit Euler steps with learned step sizes η from g₀ = 0 (Kag et al.
  2020's trained model), backpropagated through time. Not an equilibrium model.
- ``variant="implicit"``: each h_t is the exact root of F, found by a deqkit solver started from
  h_{t−1}; the gradient of every step is the implicit-function-theorem gradient (adjoint solve).
- ``variant="phantom"``: the same exact roots with phantom gradients (k damped steps from h_t).

The root is found as the fixed point of g ↦ g + s·F(g) (``root_step`` s); the fixed point does not
depend on s, only the solver's path does. Each call returns the hidden states and a
:class:`SequenceSolution` with per-step solver statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import deqkit as dk

from .cell import IncrementalCell

__all__ = ["VARIANTS", "IncrementalRNN", "SequenceSolution"]

VARIANTS = ("euler", "implicit", "phantom")
_DEQ_KEYS = ("solver", "backward", "tol", "max_iter", "eval_max_iter", "stop_mode", "on_failure")


_SEVERITY = [dk.Status.CONVERGED, dk.Status.MAX_ITER, dk.Status.DIVERGED, dk.Status.NONFINITE]


class SequenceSolution:
    """Solver statistics over a sequence: per-sample aggregates plus per-step means.

    ``nstep`` (B,) is the mean forward iterations per step, ``residual`` (B,) the largest residual
    over the steps and ``converged`` (B,) whether every step of the sample converged, so the
    trainer reads it as it reads a :class:`deqkit.Solution`. ``step_nstep``, ``step_residual`` and
    ``step_converged`` (T,) are batch means at each time step; ``status`` is the worst step's
    and ``trace`` the last step's (when tracing). ``backward`` aggregates the
    adjoint solves once backward has run (None before, and for phantom gradients).
    """

    #: No layer outputs (Jacobian penalty, Skip-DEQ loss) are computed over a sequence.
    outputs = None

    def __init__(self, solutions: list[dk.Solution], tol: float, stop_mode: str):
        self.solutions, self.tol, self.stop_mode = solutions, tol, stop_mode
        # The worst step's status; the residual trace of the last step (the trainer plots one).
        self.status = max((s.status for s in solutions), key=_SEVERITY.index)
        self.trace = solutions[-1].trace
        nstep = torch.stack([s.nstep.float() for s in solutions])  # (T, B)
        residual = torch.stack([s.residual.float() for s in solutions])
        converged = torch.stack([s.converged for s in solutions])
        self.nstep, self.residual = nstep.mean(0), residual.max(0).values
        self.converged = converged.all(0)
        self.step_nstep, self.step_residual = nstep.mean(1), residual.mean(1)
        self.step_converged = converged.float().mean(1)

    @property
    def backward(self) -> Any:
        if not self.solutions or any(s.backward is None for s in self.solutions):
            return None
        adjoints = [s.backward for s in self.solutions]
        return _BackwardStats(
            torch.stack([a.nstep.float() for a in adjoints]).mean(0),
            torch.stack([a.residual.float() for a in adjoints]).max(0).values,
        )

    def __repr__(self) -> str:
        return (
            f"SequenceSolution(steps={len(self.solutions)}, "
            f"mean_nstep={self.nstep.mean().item():.2f}, "
            f"max_residual={self.residual.max().item():.2e}, "
            f"converged={self.converged.float().mean().item():.2f})"
        )


@dataclass(frozen=True)
class _BackwardStats:
    nstep: torch.Tensor
    residual: torch.Tensor


class IncrementalRNN(nn.Module):
    """An incremental RNN over (B, T, input_size) sequences.

    Args:
        input_size, hidden: sizes of x_t and h_t.
        variant: "euler", "implicit" or "phantom" (see the module docstring).
        euler_start: g₀ of the Euler variant, "zero" (the paper) or "prev" (h_{t−1}).
        root_step: s of the solver map g ↦ g + s·F(g) of the root variants.
        deq: ``dk.DEQ`` keyword arguments for the root variants (solver, backward, tol,
            max_iter, eval_max_iter, stop_mode, on_failure); ``backward`` must be of the variant's
            kind (``dk.Implicit`` / ``dk.Phantom``) or absent.
        **cell: :class:`IncrementalCell` options (activation, alpha, eta, euler_steps, ...).

    >>> rnn = IncrementalRNN(2, 8, variant="implicit", activation="tanh", recurrent="stable",
    ...                      deq={"tol": 1e-6, "max_iter": 60, "solver": "broyden"})
    >>> h, sol = rnn(torch.randn(3, 5, 2))
    >>> h.shape, bool(sol.converged.all()), sol.step_nstep.shape
    (torch.Size([3, 5, 8]), True, torch.Size([5]))
    """

    def __init__(
        self,
        input_size: int,
        hidden: int,
        *,
        variant: str = "implicit",
        euler_start: str = "zero",
        root_step: float = 0.5,
        deq: dict | None = None,
        **cell,
    ):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if euler_start not in ("zero", "prev"):
            raise ValueError(f"euler_start must be 'zero' or 'prev', got {euler_start!r}")
        if not root_step > 0:
            raise ValueError(f"root_step must be positive, got {root_step!r}")
        self.cell = IncrementalCell(input_size, hidden, **cell)
        self.variant, self.euler_start, self.root_step = variant, euler_start, float(root_step)
        self.hidden = hidden
        self.deq = self._deq_options(dict(deq or {}))
        # One dk.DEQ layer solves every step (the trainer's budget, trace and pretraining
        # switches reach it like any DEQ layer's).
        self.solve = None if variant == "euler" else dk.DEQ(self._map, **self.deq)

    def _deq_options(self, options: dict) -> dict:
        unknown = sorted(set(options) - set(_DEQ_KEYS))
        if unknown:
            raise ValueError(f"unknown deq options {unknown}; IncrementalRNN takes {_DEQ_KEYS}")
        options.setdefault("tol", 1e-4)
        options.setdefault("max_iter", 30)
        options.setdefault("solver", "broyden")
        options.setdefault("on_failure", "ignore")
        backward = options.get("backward")
        if self.variant == "euler":
            options.pop("backward", None)
            return options
        kind = backward if isinstance(backward, str) else getattr(backward, "name", None)
        if backward is None:
            options["backward"] = self.variant
        elif kind != self.variant:
            raise ValueError(
                f"variant {self.variant!r} needs a {self.variant} backward, got {backward!r}"
            )
        return options

    def _map(self, g, wx, h_prev, U):
        return g + self.root_step * self.cell.residual(g, h_prev, wx, U)

    def _root(self, h_prev, wx, U) -> tuple[torch.Tensor, dk.Solution]:
        # Warm start from h_{t−1}: once trained, the state moves little per step.
        return self.solve(wx, h_prev, U, z0=h_prev.detach())

    def forward(
        self, x: torch.Tensor, h0: torch.Tensor | None = None, *, keep_grads: bool = False
    ) -> tuple[torch.Tensor, SequenceSolution | None]:
        """All hidden states (B, T, hidden) and the solver statistics (None for Euler).

        ``keep_grads=True`` calls ``retain_grad()`` on every h_t (listed in ``self.last_states``)
        so that ‖∂L/∂h_t‖ can be read after backward.
        """
        if x.dim() != 3:
            raise ValueError(f"x must be (B, T, input_size), got shape {tuple(x.shape)}")
        batch = x.shape[0]
        h = x.new_zeros(batch, self.hidden) if h0 is None else h0
        U = self.cell.recurrent_matrix()
        drive = self.cell.drive(x)
        states, solutions = [], []
        for t in range(x.shape[1]):
            if self.variant == "euler":
                h = self.cell.euler(h, drive[:, t], U, self.euler_start)
            else:
                h, sol = self._root(h, drive[:, t], U)
                solutions.append(sol)
            if keep_grads and h.requires_grad:
                h.retain_grad()
            states.append(h)
        self.last_states = states if keep_grads else None
        stats = None
        if solutions:
            stats = SequenceSolution(solutions, self.solve.tol, self.solve.stop_mode)
        return torch.stack(states, dim=1), stats
