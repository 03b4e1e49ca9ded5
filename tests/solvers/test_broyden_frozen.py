"""Broyden's frozen samples: a sample that stopped keeps, row for row, the inverse estimate it had
when it stopped (empty slots stay zero, a wrapped ring keeps its old terms), with NaN in its later
(ignored) proposals kept out, on the host path and the device-arithmetic path alike."""

from __future__ import annotations

import pytest
import torch

import deqkit as dk
from deqkit.solvers import _cpu, iterate

F64 = torch.float64


def _map(batch: int = 3, width: int = 6):
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(width, width, generator=gen, dtype=F64)
    w = 0.8 * w / torch.linalg.matrix_norm(w, ord=2)
    # Per-sample scales of the input: the samples need different numbers of steps.
    x = torch.randn(batch, width, generator=gen, dtype=F64) * torch.tensor([[0.01], [1.0], [3.0]])
    return lambda z: torch.tanh(z @ w.T + x)


def _solve(f, z0, solver, tol=1e-10):
    with torch.no_grad():
        return iterate(solver, f, z0, tol=tol, max_iter=80, keep_state=True)


@pytest.mark.parametrize("device_path", [False, True])
@pytest.mark.parametrize("memory", [3, 50])  # the ring wraps after sample 0 stops / never
@pytest.mark.parametrize("update", ["good", "bad"])
def test_stopped_sample_keeps_its_estimate_row_for_row(monkeypatch, device_path, memory, update):
    monkeypatch.setitem(_cpu._force_device, "on", device_path)
    f, z0 = _map(), torch.zeros(3, 6, dtype=F64)
    solver = dk.Broyden(memory=memory, update=update)
    sol = _solve(f, z0, solver)
    first = int(sol.nstep.argmin())
    n0 = sol.nstep[first].item()
    assert n0 + 2 < sol.nstep.max().item()  # one sample stops first, another goes on a while
    # That sample alone, for exactly as many steps: its estimate when it stopped.
    with torch.no_grad():
        alone = iterate(solver, lambda z: f(z.expand(3, -1))[first : first + 1],
                        z0[first : first + 1], tol=1e-10, max_iter=n0, keep_state=True)  # fmt: skip
    assert alone.nstep.item() == n0
    rank, kept = alone.state.rank, sol.state
    assert kept.rank == memory or rank < kept.rank  # the ring wrapped, or slots were added
    torch.testing.assert_close(kept.us[first, :rank], alone.state.us[0], rtol=1e-12, atol=0)
    torch.testing.assert_close(kept.vs[first, :rank], alone.state.vs[0], rtol=1e-12, atol=0)
    if rank < kept.rank:  # slots written after it stopped are empty for it
        assert kept.us[first, rank:].abs().max() == 0 and kept.vs[first, rank:].abs().max() == 0


@pytest.mark.parametrize("device_path", [False, True])
@pytest.mark.parametrize("memory", [2, 50])
def test_a_sample_turning_nan_leaves_no_nan_in_the_estimate(monkeypatch, device_path, memory):
    monkeypatch.setitem(_cpu._force_device, "on", device_path)
    g, calls = _map(), [0]

    def f(z):  # sample 1 turns NaN from the 4th evaluation on, frozen input or not
        calls[0] += 1
        out = g(z)
        return torch.where(torch.tensor([[False], [calls[0] >= 4], [False]]), float("nan"), out)

    sol = _solve(f, torch.zeros(3, 6, dtype=F64), dk.Broyden(memory=memory))
    assert sol.status == dk.Status.NONFINITE and sol.converged.tolist() == [True, False, True]
    assert torch.isfinite(sol.state.us).all() and torch.isfinite(sol.state.vs).all()
