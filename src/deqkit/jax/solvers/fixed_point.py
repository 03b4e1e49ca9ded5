"""Damped fixed-point (Picard) iteration: z ← (1 − τ) z + τ f(z)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax.numpy as jnp

from ...core.options import FixedPointOptions
from .base import Solver


@dataclass(frozen=True)
class FixedPoint(FixedPointOptions, Solver):
    """Damped Picard iteration. Converges for contractions; the baseline for everything else.

    Args:
        damping: τ in (0, 1]; 1 is plain iteration, smaller values trade speed for stability.

    >>> import jax.numpy as jnp
    >>> import deqkit.jax as dkj
    >>> sol = dkj.solve(lambda z: 0.5 * z + 1.0, jnp.zeros((2, 3)), solver=dkj.FixedPoint())
    >>> round(float(sol.z.max()), 3)
    2.0
    """

    name: ClassVar[str] = "fixed_point"

    starts_in_loop: ClassVar[bool] = True

    def init(self, z, fz):
        return None

    def empty(self, z):
        return None

    def step(self, fn, z, fz, memory, active):
        z_new = fz if self.damping == 1.0 else z + self.damping * (fz - z)
        return z_new, fn(z_new), memory, jnp.asarray(1, jnp.int32)
