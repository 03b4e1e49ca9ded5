"""DEQ-INR's amortised step with (Implicit)²'s one-step gradient (``amortize_neumann``)."""

from __future__ import annotations

import pytest
import torch

import deqkit as dk
from deqkit.data.signals import load_signal
from deqkit.zoo.deq_inr import DEQINR, INRConfig
from deqkit.zoo.deq_inr.amortize import neumann_step
from deqkit.zoo.deq_inr.fit import fit

QUIET = {"on_failure": "ignore", "solver": "fixed_point"}


def _net(terms, n=10, width=6, backward="one_step"):
    torch.manual_seed(0)
    cfg = INRConfig(width=width, layers=2, input_scale=4.0, amortize_neumann=terms)
    net = DEQINR(cfg, 2, 1, n, backward=backward, tol=1e-13, max_iter=300, **QUIET).double()
    coords = torch.rand(n, 2, dtype=torch.float64) * 2 - 1
    return net, coords


def _loss(values):
    return (values * torch.linspace(-1, 1, len(values), dtype=values.dtype)[:, None]).sum()


def _weight(net):
    return net.cell.linears[0].parametrizations.weight.original


def test_the_step_gradient_is_the_truncated_neumann_series_and_tends_to_the_implicit_one():
    index = torch.arange(10)
    ift, coords = _net(0, backward=dk.Implicit(tol=1e-13, max_iter=300))
    exact = torch.autograd.grad(_loss(ift.eval()(coords)[0]), _weight(ift))[0]
    errors = {}
    for terms in (1, 2, 60):
        net, _ = _net(terms)
        net.train()
        net(coords, index)  # solves from zeros (tol 1e-13): the cache holds z*
        values, sol = net(coords, index)  # the amortised step: one f at z*
        assert sol.nfev == 1 and bool(sol.converged.all())
        grad = torch.autograd.grad(_loss(values), _weight(net))[0]
        errors[terms] = float((grad - exact).norm() / exact.norm())
    # each Jᵀ term shrinks the error of the Neumann series; 60 terms give the implicit gradient
    assert errors[60] < 1e-6 < errors[2] < errors[1]


def test_one_term_matches_an_explicit_jacobian_in_float64():
    torch.manual_seed(1)
    lin = torch.nn.Linear(4, 4).double()
    g = (torch.rand(3, 4, dtype=torch.float64) * 2 - 1,)
    cell = lambda z, g: g[0] * lin(z)  # noqa: E731
    z0 = torch.randn(3, 4, dtype=torch.float64)
    u = torch.randn(3, 4, dtype=torch.float64)
    z, _ = neumann_step(cell, z0, g, terms=1)
    (grad_b,) = torch.autograd.grad(z, lin.bias, u)
    jac = torch.func.vmap(torch.func.jacrev(lambda zi, gi: gi * lin(zi)))(z0, g[0])  # (N, D, D)
    weighted = u + torch.einsum("ni,nij->nj", u, jac)  # u + Jᵀu per coordinate
    assert torch.allclose(grad_b, (weighted * g[0]).sum(0), atol=1e-12)


def test_the_paper_gradient_trains_at_one_f_per_step():
    s = load_signal("camera", resolution=12)
    torch.manual_seed(0)
    cfg = INRConfig(width=16, input_scale=12.0, amortize_neumann=1)
    net = DEQINR(cfg, 2, 1, len(s.coords), tol=1e-3, **QUIET)
    result = fit(net, s, steps=25, lr=1e-2)
    assert result.f_per_step == 1.0 and result.f_first_step > 3
    assert result.train["psnr"] > 14.0
    assert result.test["status"] == "CONVERGED"
    assert 0 < result.cpu_per_step


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"amortize_neumann": -1}, ValueError),
        ({"amortize_neumann": True}, TypeError),
        ({"amortize_neumann": 1.0}, TypeError),
        ({"amortize_neumann": 1, "amortize_steps": 2}, ValueError),
    ],
)
def test_bad_neumann_options_are_one_clear_error(options, error):
    with pytest.raises(error, match="amortize_"):
        INRConfig(**options)
    with pytest.raises(ValueError, match="terms"):
        neumann_step(lambda z, g: z, torch.zeros(1, 1), (), terms=0)
