"""Broyden's two secant updates ("good" and "bad"): both exact on known fixed points, both satisfy
the secant equation, both differentiable when unrolled."""

import pytest
import torch
from problems import make_linear

import deqkit as dk
from deqkit.solvers import iterate

F64 = torch.float64
UPDATES = ("good", "bad")


@pytest.mark.parametrize("update", UPDATES)
@pytest.mark.parametrize("memory", [3, 30])
def test_linear_fixed_point_for_both_updates(update, memory):
    prob = make_linear()
    solver = dk.Broyden(update=update, memory=memory)
    sol = dk.solve(prob.f, torch.zeros(4, 6, dtype=F64), solver, tol=1e-12, max_iter=300)
    assert sol.status == dk.Status.CONVERGED
    torch.testing.assert_close(sol.z, prob.z_star(), atol=1e-10, rtol=0)


@pytest.mark.parametrize("update", UPDATES)
def test_converges_where_picard_diverges(update):
    sol = dk.solve(
        lambda z: -2.0 * z + 1.0, torch.zeros(2, 3, dtype=F64), dk.Broyden(update=update), tol=1e-10
    )
    assert sol.status == dk.Status.CONVERGED
    torch.testing.assert_close(sol.z, torch.full((2, 3), 1 / 3, dtype=F64))


class Recorder(dk.Broyden):
    """Keeps (z, g) of every evaluated point and the (U, V) estimate after each step."""

    def init(self, z, fz):
        self.points, self.estimates = [(z.clone(), (fz - z).clone())], []
        return super().init(z, fz)

    def step(self, evaluate, z, fz, memory, active):
        z_new, fz_new, memory = super().step(evaluate, z, fz, memory, active)
        self.points.append((z_new.clone(), (fz_new - z_new).clone()))
        us, vs, count = memory[:3]
        self.estimates.append((us[:, :count].clone(), vs[:, :count].clone()))
        return z_new, fz_new, memory


@pytest.mark.parametrize("update", UPDATES)
def test_estimate_satisfies_the_secant_equation(update):
    """After each step the inverse estimate H = −I + U Vᵀ maps the last Δg to the last Δz."""
    prob = make_linear(radius=0.9)
    rec = Recorder(update=update)
    with torch.no_grad():
        iterate(rec, prob.f, torch.zeros(4, 6, dtype=F64), tol=1e-12, max_iter=5)
    assert len(rec.estimates) == 4
    for i, (us, vs) in enumerate(rec.estimates):
        (z0, g0), (z1, g1) = rec.points[i], rec.points[i + 1]
        dz, dg = z1 - z0, g1 - g0
        h_dg = -dg + torch.einsum("bkd,bk->bd", us, torch.einsum("bkd,bd->bk", vs, dg))
        torch.testing.assert_close(h_dg, dz, atol=1e-10, rtol=1e-8)


def test_bad_update_differs_from_good():
    """The two updates are different methods: same secant condition, different iterates."""
    prob = make_linear(radius=0.9)
    z0 = torch.zeros(4, 6, dtype=F64)
    runs = [
        dk.solve(prob.f, z0, dk.Broyden(update=u), tol=1e-30, max_iter=4, on_failure="ignore").z
        for u in UPDATES
    ]
    assert (runs[0] - runs[1]).abs().max() > 1e-8


@pytest.mark.parametrize("update", UPDATES)
def test_unrolled_gradient_matches_closed_form(update):
    prob = make_linear()
    for t in (prob.A, prob.B, prob.x):
        t.requires_grad_()
    weight = torch.randn(4, 6, dtype=F64, generator=torch.Generator().manual_seed(3))
    exact = torch.autograd.grad((prob.z_star() * weight).sum(), (prob.A, prob.B, prob.x))
    z, sol = dk.fixed_point(
        prob.f,
        torch.zeros(4, 6, dtype=F64),
        dk.Broyden(update=update),
        "unrolled",
        tol=1e-13,
        max_iter=400,
    )
    assert sol.status == dk.Status.CONVERGED
    got = torch.autograd.grad((z * weight).sum(), (prob.A, prob.B, prob.x))
    for g, e in zip(got, exact, strict=True):
        torch.testing.assert_close(g, e, atol=1e-8, rtol=0)


def test_unknown_update_is_rejected():
    with pytest.raises(ValueError, match="Broyden.update"):
        dk.Broyden(update="ugly")
