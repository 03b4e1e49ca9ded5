"""Damped fixed-point (Picard) iteration: z ← (1 − τ) z + τ f(z)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..core.options import FixedPointOptions
from .base import Evaluate, Solver


@dataclass(frozen=True)
class FixedPoint(FixedPointOptions, Solver):
    """Damped Picard iteration. Converges for contractions; the baseline for everything else.

    Args:
        damping: τ in (0, 1]; 1 is plain iteration, smaller values trade speed for stability.

    >>> import deqkit as dk
    >>> sol = dk.solve(lambda z: 0.5 * z + 1.0, torch.zeros(2, 3), solver=dk.FixedPoint(), tol=1e-8)
    >>> round(sol.z.max().item(), 6)
    2.0
    """

    name: ClassVar[str] = "fixed_point"

    def init(self, z: torch.Tensor, fz: torch.Tensor) -> None:
        return None

    def step(self, evaluate: Evaluate, z, fz, memory, active):
        z_new = fz if self.damping == 1.0 else torch.lerp(z, fz, self.damping)
        return z_new, evaluate(z_new), memory
