"""The loop's final truth check reads the solver's own residual hook, so a solver that defines
its stopping residual (a per-block criterion, as the DEQ-DDIM sampler's) keeps its verdict."""

from __future__ import annotations

import torch

import deqkit as dk


class FirstHalfAnderson(dk.Anderson):
    """Anderson that stops on the first half of each sample's coordinates only."""

    def residual(self, memory):
        g = super().residual(memory)
        return g[:, : g.shape[1] // 2]


def test_final_check_uses_the_solvers_residual():
    torch.manual_seed(0)
    # First half contracts fast, second half barely moves: only the custom rule can stop.
    rate = torch.cat([torch.full((4,), 0.1), torch.full((4,), 0.999)])
    x = torch.randn(3, 8, dtype=torch.float64)

    def f(z):
        return rate * z + x

    z0 = torch.zeros(3, 8, dtype=torch.float64)
    # Picard on the halves' rates keeps the first half converged; the default rule never stops.
    plain = dk.solve(f, z0, solver=dk.FixedPoint(), tol=1e-6, max_iter=30, stop_mode="abs")
    assert not bool(plain.converged.any())
    sol = dk.solve(f, z0, solver=FirstHalfAnderson(m=2), tol=1e-6, max_iter=30, stop_mode="abs")
    assert sol.status == dk.Status.CONVERGED, sol.message
    assert bool(sol.converged.all())
    assert float(sol.abs_residual.max()) <= 1e-6
