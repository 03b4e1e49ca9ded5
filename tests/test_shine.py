"""SHINE backward: the forward Broyden inverse estimate as the implicit gradient."""

from __future__ import annotations

import pytest
import torch
from problems import TanhCell
from torch.nn.functional import cosine_similarity

import deqkit as dk
from deqkit.solvers import BroydenState, iterate

D64 = torch.float64


class Cell(TanhCell):
    def initial_state(self, x):
        return x.new_zeros(x.shape[0], self.W.shape[0])


def _flat_grad(cell, z):
    grads = torch.autograd.grad(z.square().sum(), list(cell.parameters()))
    return torch.cat([g.flatten() for g in grads])


def _grad(cell, x, backward, tol=1e-8):
    deq = dk.DEQ(cell, solver="broyden", backward=backward, tol=tol, max_iter=100)
    return _flat_grad(cell, deq(x)[0])


@pytest.mark.parametrize("scale", [0.5, 0.9])
def test_shine_gradient_is_close_to_implicit_and_better_than_jacobian_free(scale):
    cell = Cell(dim=32, scale=scale, seed=1)
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(2), dtype=D64)
    exact = _grad(cell, x, dk.Implicit(tol=1e-12, max_iter=200), tol=1e-10)
    shine = _grad(cell, x, dk.Shine())
    jfb = _grad(cell, x, dk.OneStep())
    cos_shine = cosine_similarity(shine, exact, dim=0).item()
    cos_jfb = cosine_similarity(jfb, exact, dim=0).item()
    # measured: 0.992 (scale 0.5) and 0.976 (scale 0.9); one-step: 0.985 and 0.954
    assert cos_shine >= 0.9
    assert cos_shine > cos_jfb
    refined = _grad(cell, x, dk.Shine(refine=3))
    err = [(g - exact).norm() / exact.norm() for g in (jfb, shine, refined)]
    assert err[0] > err[1] > err[2] and err[2] < 0.01, err


def test_shine_by_name_and_with_a_wrapped_ring_buffer():
    cell = Cell(dim=16, scale=0.7, seed=1)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=D64)
    exact = _grad(cell, x, dk.Implicit(tol=1e-12, max_iter=200), tol=1e-10)
    deq = dk.DEQ(cell, solver=dk.Broyden(memory=3), backward="shine", tol=1e-8, max_iter=100)
    z, sol = deq(x)
    assert sol.nstep.max().item() > 4  # more Broyden steps than memory slots: the ring wrapped
    inverse = sol.state  # the general channel for the solver's final state
    assert isinstance(inverse, BroydenState) and inverse.rank == 3
    assert cosine_similarity(_flat_grad(cell, z), exact, dim=0).item() >= 0.9


def test_kept_state_of_early_stopping_sample_is_its_own():
    """A sample frozen early keeps its estimate: batch and single-sample solves agree (with
    the ring buffer wrapping after the first sample stopped, memory=5, and without)."""
    cell = Cell(dim=6, scale=0.8)
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(3), dtype=D64)
    z0 = torch.zeros(2, 6, dtype=D64)
    z0[0] = dk.solve(lambda z: cell(z, x[:1]), z0[:1], tol=1e-6).z[0]  # sample 0 starts closer

    def recorded(rows, solver):
        with torch.no_grad():
            sol = iterate(
                solver, lambda z: cell(z, x[rows]), z0[rows], tol=1e-9, max_iter=60,
                keep_state=True,
            )  # fmt: skip
        return sol, sol.state

    g = torch.randn(2, 6, generator=torch.Generator().manual_seed(4), dtype=D64)
    first, _ = recorded([0, 1], dk.Broyden())
    n0, n1 = first.nstep.tolist()
    assert n0 + 2 < n1
    # Sample 0 stops after n0 - 1 updates. memory n0 - 1: its ring is full when it stops and
    # slots it holds are overwritten for sample 1 later; memory n0: a slot is written (empty for
    # sample 0) before the ring wraps.
    for solver in (dk.Broyden(), dk.Broyden(memory=n0 - 1), dk.Broyden(memory=n0)):
        both, inv = recorded([0, 1], solver)
        assert both.nstep[0] == n0 and both.nstep[1] > n0 + 1  # the ring wraps after n0
        for i in (0, 1):
            _, alone = recorded([i], solver)
            torch.testing.assert_close(inv.adjoint(g)[i : i + 1], alone.adjoint(g[i : i + 1]))


def test_shine_needs_broyden_and_validates():
    cell = Cell()
    x = torch.randn(2, 3, dtype=D64)
    with pytest.raises(ValueError, match="broyden"):  # at construction, before any call
        dk.DEQ(cell, solver="anderson", backward="shine")
    with pytest.raises(ValueError, match="broyden"):
        dk.fixed_point(lambda z: cell(z, x), torch.zeros(2, 6, dtype=D64), "anderson", "shine")
    with pytest.raises(ValueError, match="refine"):
        dk.Shine(refine=-1)
    with pytest.raises(TypeError):
        dk.Shine(steps=2)
    with torch.no_grad():  # no backward needed: nothing is recorded into the graph
        z, sol = dk.DEQ(cell, solver="broyden", backward="shine")(x)
    assert not z.requires_grad
