"""Unrolled pretraining: an explicit weight-tied unroll, continuous with the equilibrium model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import deqkit as dk

D64 = torch.float64


class Cell(nn.Module):
    def __init__(self, dim=8):
        super().__init__()
        self.lin = nn.Linear(dim, dim, dtype=D64)
        dk.apply_norm(self, "spectral", target=0.8, n_power_iterations=3)

    def forward(self, z, x):
        return torch.tanh(self.lin(z) + x)


class Model(nn.Module):
    def __init__(self, dim=8):
        super().__init__()
        self.enc = nn.Linear(3, dim, dtype=D64)
        self.deq = dk.DEQ(Cell(dim), tol=1e-8, max_iter=60)
        self.head = nn.Linear(dim, 1, dtype=D64)

    def forward(self, x):
        z, sol = self.deq(self.enc(x))
        return self.head(z), sol


def test_pretrain_is_the_explicit_unroll_with_its_gradient():
    torch.manual_seed(0)
    cell = Cell(4).eval()  # fixed power-iteration state: the same weight in both runs
    x = torch.randn(3, 4, dtype=D64)
    deq = dk.DEQ(cell).pretrain(5)
    z, sol = deq(x)
    grads = torch.autograd.grad(z.square().sum(), list(cell.parameters()))
    manual = torch.zeros(3, 4, dtype=D64)
    for _ in range(5):
        manual = cell(manual, x)
    ref = torch.autograd.grad(manual.square().sum(), list(cell.parameters()))
    torch.testing.assert_close(z, manual)
    for a, b in zip(grads, ref, strict=True):
        torch.testing.assert_close(a, b)
    assert sol.nfev == 5 and sol.nstep.tolist() == [5, 5, 5]
    # the reported residual is that of the last step: ‖z5 − z4‖ / ‖z5‖
    z4 = torch.zeros(3, 4, dtype=D64)
    for _ in range(4):
        z4 = cell(z4, x)
    rel = torch.linalg.vector_norm(manual - z4, dim=1) / torch.linalg.vector_norm(manual, dim=1)
    torch.testing.assert_close(sol.rel_residual, rel.detach())
    assert sol.status == (dk.Status.CONVERGED if (rel <= 1e-4).all() else dk.Status.MAX_ITER)


def test_pretrain_states_modes_and_errors():
    deq = dk.DEQ(lambda z, x: 0.5 * z + x, n_states=2)
    z, sol = deq.pretrain(4)(torch.ones(2, 1))
    assert len(sol.outputs.states) == 2 and sol.outputs.states[-1] is z
    assert sol.outputs.states[0][0].item() == pytest.approx(1.5)  # after 2 of 4 steps
    assert "pretrain_steps=4" in repr(deq)
    z, sol = deq.pretrain(0)(torch.ones(2, 1))
    assert z[0].item() == pytest.approx(2.0, abs=1e-3) and sol.stop_mode == "rel"
    with pytest.raises(ValueError, match="steps"):
        deq.pretrain(-1)
    with pytest.raises(ValueError, match="n_states"):
        dk.DEQ(lambda z, x: z, n_states=3).pretrain(2)
    with pytest.raises(TypeError, match="steps"):
        deq.pretrain(2.0)


def test_loss_is_continuous_at_the_switch_to_equilibrium():
    torch.manual_seed(0)
    model = Model()
    x = torch.randn(128, 3, dtype=D64)
    y = torch.sin(x.sum(dim=1, keepdim=True))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.deq.pretrain(12)
    first = None
    for _ in range(150):
        pred, _ = model(x)
        loss = (pred - y).square().mean()
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()  # freeze spectral-norm power iteration so both modes see the same weights
    with torch.no_grad():
        pre_loss = (model(x)[0] - y).square().mean().item()
        model.deq.pretrain(0)
        pred, sol = model(x)
        eq_loss = (pred - y).square().mean().item()
    assert pre_loss < 0.3 * first  # the model did learn during pretraining
    assert sol.status == dk.Status.CONVERGED
    assert abs(eq_loss - pre_loss) < 0.05 * pre_loss, (pre_loss, eq_loss)
