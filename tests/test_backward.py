"""Gradients through the fixed point: closed forms, gradcheck, phantom convergence, z0 isolation."""

import pytest
import torch
from problems import SOLVER_NAMES, TanhCell, make_linear

import deqkit as dk

F64 = torch.float64


def _solver_for(name):
    return dk.Anderson(m=6) if name == "anderson" else name


@pytest.mark.parametrize("solver", SOLVER_NAMES)
@pytest.mark.parametrize("backward", ["implicit", "unrolled"])
def test_linear_deq_gradients_match_closed_form(solver, backward):
    prob = make_linear()
    for t in (prob.A, prob.B, prob.x):
        t.requires_grad_()
    weight = torch.randn(4, 6, dtype=F64, generator=torch.Generator().manual_seed(3))
    exact = torch.autograd.grad((prob.z_star() * weight).sum(), (prob.A, prob.B, prob.x))
    bwd = dk.Implicit(tol=1e-13, max_iter=300) if backward == "implicit" else backward
    z, sol = dk.fixed_point(
        prob.f, torch.zeros(4, 6, dtype=F64), _solver_for(solver), bwd, tol=1e-13, max_iter=400
    )
    assert sol.status == dk.Status.CONVERGED
    torch.testing.assert_close(z, prob.z_star(), atol=1e-10, rtol=0)
    got = torch.autograd.grad((z * weight).sum(), (prob.A, prob.B, prob.x))
    for g, e, name in zip(got, exact, "ABx", strict=True):
        torch.testing.assert_close(g, e, atol=1e-8, rtol=0, msg=f"d/d{name}")
    if backward == "implicit":
        assert sol.backward is not None and sol.backward.status == dk.Status.CONVERGED


@pytest.mark.parametrize("solver", SOLVER_NAMES)
def test_gradcheck_tanh_cell_tensor_state(solver):
    cell = TanhCell(dim=4, in_dim=2)
    x = torch.randn(3, 2, dtype=F64, requires_grad=True)

    def run(x, W, U, b):
        f = lambda z: torch.tanh(z @ W.T + x @ U.T + b)  # noqa: E731
        z, _ = dk.fixed_point(
            f,
            torch.zeros(3, 4, dtype=F64),
            _solver_for(solver),
            dk.Implicit(tol=1e-12),
            tol=1e-12,
            max_iter=200,
        )
        return z

    assert torch.autograd.gradcheck(run, (x, cell.W, cell.U, cell.b), atol=1e-6)


@pytest.mark.parametrize("solver", SOLVER_NAMES)
def test_gradcheck_tuple_state(solver):
    gen = torch.Generator().manual_seed(5)
    W1 = (0.3 * torch.randn(3, 3, generator=gen, dtype=F64)).requires_grad_()
    W2 = (0.3 * torch.randn(2, 3, generator=gen, dtype=F64)).requires_grad_()
    x = torch.randn(2, 3, generator=gen, dtype=F64, requires_grad=True)

    def run(x, W1, W2):
        def f(state):
            a, b = state
            a_new = torch.tanh(a @ W1.T + 0.2 * b.sum(dim=(1, 2)).unsqueeze(1) + x)
            b_new = torch.tanh((a @ W2.T).unsqueeze(1).expand(-1, 2, -1) * 0.5 + 0.1 * b)
            return a_new, b_new

        z0 = (torch.zeros(2, 3, dtype=F64), torch.zeros(2, 2, 2, dtype=F64))
        (a, b), _ = dk.fixed_point(
            f, z0, _solver_for(solver), dk.Implicit(tol=1e-12), tol=1e-12, max_iter=200
        )
        return a, b

    assert torch.autograd.gradcheck(run, (x, W1, W2), atol=1e-6)


def test_phantom_error_shrinks_with_steps(tanh_cell):
    x = torch.randn(6, 3, dtype=F64)

    def grads(backward):
        tanh_cell.zero_grad()
        z, _ = dk.fixed_point(
            lambda z: tanh_cell(z, x),
            torch.zeros(6, 5, dtype=F64),
            "anderson",
            backward,
            tol=1e-12,
            max_iter=100,
        )
        (z**2).sum().backward()
        return torch.cat([p.grad.flatten() for p in tanh_cell.parameters()])

    exact = grads(dk.Implicit(tol=1e-12))
    errors = [
        ((grads(dk.Phantom(steps=k, damping=0.8)) - exact).norm() / exact.norm()).item()
        for k in (1, 2, 4, 8, 16)
    ]
    assert all(b < a for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < 1e-3
    one_step = ((grads("one_step") - exact).norm() / exact.norm()).item()
    assert one_step == pytest.approx(
        ((grads(dk.Phantom(steps=1, damping=1.0)) - exact).norm() / exact.norm()).item()
    )


@pytest.mark.parametrize("backward", ["implicit", "phantom", "one_step", "unrolled"])
def test_no_gradient_reaches_z0(backward, tanh_cell):
    x = torch.randn(2, 3, dtype=F64)
    z0 = torch.randn(2, 5, dtype=F64, requires_grad=True)
    z, _ = dk.fixed_point(lambda z: tanh_cell(z, x), z0, "anderson", backward, tol=1e-10)
    z.sum().backward()
    assert z0.grad is None
    assert tanh_cell.W.grad is not None and tanh_cell.W.grad.abs().sum() > 0


def test_unknown_backward_is_rejected():
    with pytest.raises(ValueError, match="unknown backward 'ift'"):
        dk.fixed_point(lambda z: z, torch.zeros(1, 1), backward="ift")
    with pytest.raises(ValueError, match="Phantom.steps"):
        dk.Phantom(steps=0)
    with pytest.raises(TypeError, match="Implicit.max_iter"):
        dk.Implicit(max_iter=2.0)


def test_adjoint_failure_follows_policy(tanh_cell):
    x = torch.randn(2, 3, dtype=F64)
    z, _ = dk.fixed_point(
        lambda z: tanh_cell(z, x),
        torch.zeros(2, 5, dtype=F64),
        backward=dk.Implicit(tol=1e-14, max_iter=2, solver="fixed_point"),
        on_failure="raise",
    )
    with pytest.raises(dk.SolverError, match="adjoint"):
        z.sum().backward()


def test_citation_follows_the_configuration():
    deq = dk.DEQ(TanhCell(), solver="anderson", backward="one_step")
    text = dk.citation(deq)
    assert "bai2019deep" in text and "walker2011anderson" in text and "fung2022jfb" in text
    assert "broyden1965class" not in text
    assert text.count("@") == 3
