"""Broyden's default memory (issue 11): a default solve never drops a secant update, which on a
hard problem (spectral radius 0.99, like benchmark (d)) is what convergence depends on."""

from __future__ import annotations

import torch

import deqkit as dk
from deqkit.core import DEFAULTS

F64 = torch.float64


def _hard():
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(256, 256, generator=gen, dtype=F64)
    w = w * (0.99 / torch.linalg.eigvals(w).abs().max().item())
    x = 0.1 * torch.randn(8, 256, generator=gen, dtype=F64)
    return lambda z: torch.tanh(z @ w.T + x)


def test_default_memory_covers_the_default_budget():
    assert dk.Broyden().memory >= DEFAULTS["max_iter"]
    import deqkit.jax as dkj

    assert dkj.Broyden().memory == dk.Broyden().memory


def test_default_broyden_is_full_memory_broyden_within_the_default_budget():
    f, z0 = _hard(), torch.zeros(8, 256, dtype=F64)
    default = dk.solve(f, z0, dk.Broyden(), tol=1e-4, on_failure="ignore")
    full = dk.solve(f, z0, dk.Broyden(memory=1000), tol=1e-4, on_failure="ignore")
    wrapped = dk.solve(f, z0, dk.Broyden(memory=30), tol=1e-4, on_failure="ignore")
    assert torch.equal(default.z, full.z) and torch.equal(default.nstep, full.nstep)
    assert default.status == dk.Status.CONVERGED
    assert wrapped.status == dk.Status.MAX_ITER  # the ring wrapped: updates were lost
