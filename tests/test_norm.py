"""Weight / spectral norm: coverage of layer types, removal, one evaluation per DEQ call."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import deqkit as dk


class ConvCell(nn.Module):
    def __init__(self, ch=3):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)
        self.up = nn.ConvTranspose2d(ch, ch, 3, padding=1)
        self.lin = nn.Linear(4, 4)

    def forward(self, z, x):
        return torch.tanh(0.3 * self.up(self.conv(z)) + x)


class Counter(nn.Module):
    """Identity parametrization that counts its evaluations."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, w):
        self.calls += 1
        return w


class LinCell(nn.Module):
    def __init__(self, dim=6):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(dim, dim, dtype=torch.float64)

    def forward(self, z, x):
        return torch.tanh(self.lin(z) + x)


def test_every_layer_type_is_parametrised_and_removal_restores_outputs():
    torch.manual_seed(0)
    cell = ConvCell()
    x = torch.randn(2, 3, 4, 4)
    before = cell(x, x)
    dk.apply_norm(cell, "weight")
    for layer in (cell.conv, cell.up, cell.lin):
        assert parametrize.is_parametrized(layer, "weight")
    # weight norm is the identity at initialisation
    torch.testing.assert_close(cell(x, x), before)
    dk.remove_norm(cell)
    for layer in (cell.conv, cell.up, cell.lin):
        assert not parametrize.is_parametrized(layer)
    torch.testing.assert_close(cell(x, x), before)


def test_weight_norm_uses_output_dim_of_transposed_conv():
    up = dk.apply_norm(nn.ConvTranspose2d(2, 5, 3), "weight")
    # one magnitude per output channel: dim 1 of a transposed conv weight (in, out, kh, kw)
    assert up.parametrizations.weight.original0.shape == (1, 5, 1, 1)


def test_spectral_norm_reaches_target():
    torch.manual_seed(0)
    lin = dk.apply_norm(nn.Linear(8, 8), "spectral", target=0.7, n_power_iterations=50)
    assert torch.linalg.matrix_norm(lin.weight, 2).item() == pytest.approx(0.7, rel=1e-3)
    dk.remove_norm(lin)
    assert not parametrize.is_parametrized(lin)


def test_skip_and_errors():
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    dk.apply_norm(net, skip=["1"])
    assert parametrize.is_parametrized(net[0]) and not parametrize.is_parametrized(net[1])
    with pytest.raises(ValueError, match="already has a weight parametrization"):
        dk.apply_norm(net)
    with pytest.raises(ValueError, match="kind"):
        dk.apply_norm(nn.Linear(2, 2), "batch")
    with pytest.raises(TypeError, match="torch.nn.Module"):
        dk.apply_norm(lambda z: z)
    with pytest.raises(ValueError, match="target"):
        dk.apply_norm(nn.Linear(2, 2), "spectral", target=0.0)


@pytest.mark.parametrize("backward", ["implicit", "phantom", "unrolled"])
def test_one_weight_evaluation_per_call_and_repeated_backward(backward):
    cell = dk.apply_norm(LinCell(), "weight")
    counter = Counter()
    parametrize.register_parametrization(cell.lin, "weight", counter)
    deq = dk.DEQ(cell, backward=backward, tol=1e-10, max_iter=60)
    x = torch.randn(3, 6, dtype=torch.float64)
    opt = torch.optim.SGD(cell.parameters(), lr=1e-2)
    for _ in range(3):
        counter.calls = 0
        z, sol = deq(x)
        assert sol.nfev > 5
        assert counter.calls == 1
        opt.zero_grad()
        z.square().sum().backward()  # a second, third step needs no manual reset
        opt.step()
    assert counter.calls == 1


def test_cached_gradient_equals_uncached_gradient():
    cell = dk.apply_norm(LinCell(), "spectral", target=0.8)
    cell.eval()  # freeze the power iteration so both runs see the same weight
    x = torch.randn(3, 6, dtype=torch.float64)
    kw = dict(tol=1e-12, max_iter=100, backward=dk.Implicit(tol=1e-12, max_iter=100))
    deq = dk.DEQ(cell, **kw)
    z, _ = deq(x)
    cached = torch.autograd.grad(z.sum(), list(cell.parameters()))
    # reference: fixed_point without any caching, the weight recomputed at each f call
    z_ref, _ = dk.fixed_point(lambda z: cell(z, x), torch.zeros_like(x), **kw)
    plain = torch.autograd.grad(z_ref.sum(), list(cell.parameters()))
    for a, b in zip(cached, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)
