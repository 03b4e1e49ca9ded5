"""The implicit backward's accuracy rule and what each backward does with create_graph=True."""

import pytest
import torch

import deqkit as dk

F64 = torch.float64


def _linear(d=16, batch=3, radius=0.9, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=F64))
    w = (q * torch.linspace(-radius, radius, d, dtype=F64)) @ q.T
    x = torch.randn(batch, d, generator=gen, dtype=F64)
    c = torch.randn(batch, d, generator=gen, dtype=F64)
    return w, x, c


def _linear_grads(backward, tol, max_iter=200):
    w0, x0, c = _linear()
    w, x = w0.clone().requires_grad_(), x0.clone().requires_grad_()
    z, sol = dk.fixed_point(
        lambda z: z @ w.T + x, torch.zeros_like(x0), backward=backward, tol=tol, max_iter=max_iter
    )
    (z * c).sum().backward()
    eye = torch.eye(len(w0), dtype=F64)
    u = torch.linalg.solve((eye - w0).T, c.T).T  # closed form: u = (I - Wᵀ)⁻¹ c
    z_exact = torch.linalg.solve(eye - w0, x0.T).T
    err = max(
        ((x.grad - u).norm() / u.norm()).item(),
        ((w.grad - u.T @ z_exact).norm() / (u.T @ z_exact).norm()).item(),
    )
    return err, sol


def test_default_adjoint_is_as_accurate_as_a_tight_forward_solve():
    # Before: the adjoint kept its own tol 1e-6, so forward tol 1e-12 gave ~1e-6 gradients.
    err, sol = _linear_grads("implicit", tol=1e-12)
    assert sol.backward.status == dk.Status.CONVERGED
    assert sol.backward.tol == 1e-12
    assert err < 1e-10
    err_old, _ = _linear_grads(dk.Implicit(tol=1e-6), tol=1e-12)
    assert err_old > 1e-8  # the old fixed default really was the limit


def test_default_adjoint_follows_forward_tol_and_budget():
    _, loose = _linear_grads(dk.Implicit(), tol=1e-4)
    assert loose.backward.tol == 1e-4
    _, tight = _linear_grads(dk.Implicit(), tol=1e-10, max_iter=200)
    assert tight.backward.tol == 1e-10 and tight.backward.status == dk.Status.CONVERGED
    assert int(tight.backward.nstep.max()) > int(loose.backward.nstep.max())
    # An adjoint budget of its own is kept: 3 steps cannot reach 1e-10.
    with pytest.warns(dk.DEQWarning, match="adjoint"):
        _, capped = _linear_grads(dk.Implicit(max_iter=3), tol=1e-10, max_iter=200)
    assert int(capped.backward.nstep.max()) == 3


def test_implicit_options_resolve_only_unset_fields():
    opts = dk.Implicit(tol=1e-3).for_forward(1e-8, 77)
    assert (opts.tol, opts.max_iter) == (1e-3, 77)
    assert dk.Implicit().tol is None and dk.Implicit().max_iter is None
    with pytest.raises(ValueError, match="for_forward"):
        dk.Implicit().attach(lambda z: z, torch.zeros(1, 1), None, "ignore")


def test_deq_layer_adjoint_follows_its_tol():
    lin = torch.nn.Linear(4, 4).double()
    with torch.no_grad():
        lin.weight.mul_(0.3)
    deq = dk.DEQ(lambda z, x: torch.tanh(lin(z) + x), tol=1e-10, max_iter=100)
    z, sol = deq(torch.randn(2, 4, dtype=F64))
    z.sum().backward()
    assert sol.backward.tol == 1e-10 and sol.backward.status == dk.Status.CONVERGED


# --- create_graph=True: higher derivatives ---------------------------------------------------


def _issue_example(backward):
    a = torch.tensor(0.5, dtype=F64, requires_grad=True)
    x = torch.tensor([[2.0]], dtype=F64, requires_grad=True)
    z, _ = dk.fixed_point(
        lambda z: a * z + x, torch.zeros(1, 1, dtype=F64), backward=backward, tol=1e-12,
        max_iter=200,
    )  # fmt: skip
    (gx,) = torch.autograd.grad(z.sum() + (a**2 * x).sum(), x, create_graph=True)
    (gxa,) = torch.autograd.grad(gx.sum(), a)
    return gx.item(), gxa.item()


@pytest.mark.parametrize("backward", ["implicit", dk.Implicit(tol=1e-12, solver="fixed_point")])
def test_implicit_second_derivative_of_the_issue_example_is_exact(backward):
    # Before: d/da of d/dx came out 1.0 (exact 1/(1-a)^2 + 2a = 5.0) with no error.
    gx, gxa = _issue_example(backward)
    assert gx == pytest.approx(1 / (1 - 0.5) + 0.25, rel=1e-10)
    assert gxa == pytest.approx(1 / (1 - 0.5) ** 2 + 2 * 0.5, rel=1e-9)


def test_implicit_refuses_create_graph_when_f_uses_a_non_leaf_tensor():
    a = torch.tensor(0.5, dtype=F64, requires_grad=True)
    x = 2.0 * torch.tensor([[1.0]], dtype=F64, requires_grad=True)  # made before the solve
    z, _ = dk.fixed_point(lambda z: a * z + x, torch.zeros(1, 1, dtype=F64), tol=1e-12)
    with pytest.raises(NotImplementedError, match="non-leaf tensor made before the solve"):
        torch.autograd.grad(z.sum(), a, create_graph=True)
    (ga,) = torch.autograd.grad(z.sum(), a)  # first derivatives still work: x/(1-a)^2 = 8
    assert ga.item() == pytest.approx(8.0, rel=1e-10)


def test_implicit_third_derivative_is_refused():
    a = torch.tensor(0.5, dtype=F64, requires_grad=True)
    z, _ = dk.fixed_point(lambda z: a * z + 1.0, torch.zeros(1, 1, dtype=F64), tol=1e-12)
    (g1,) = torch.autograd.grad(z.sum(), a, create_graph=True)  # 1/(1-a)^2 = 4
    (g2,) = torch.autograd.grad(g1, a, retain_graph=True)  # 2/(1-a)^3 = 16
    assert (g1.item(), g2.item()) == (pytest.approx(4.0, rel=1e-10), pytest.approx(16.0, rel=1e-9))
    with pytest.raises(NotImplementedError, match="third derivatives"):
        torch.autograd.grad(g1, a, create_graph=True)  # a graph for the third derivative


def test_shine_refuses_create_graph():
    a = torch.tensor(0.5, dtype=F64, requires_grad=True)
    z, _ = dk.fixed_point(
        lambda z: a * z + 1.0, torch.zeros(1, 1, dtype=F64), "broyden", "shine", tol=1e-10
    )
    with pytest.raises(NotImplementedError, match="backward='shine'"):
        torch.autograd.grad(z.sum(), a, create_graph=True)


def test_implicit_first_derivatives_unaffected_by_the_refusal():
    a = torch.tensor(0.5, dtype=F64, requires_grad=True)
    z, _ = dk.fixed_point(lambda z: a * z + 2.0, torch.zeros(1, 1, dtype=F64), tol=1e-12)
    (ga,) = torch.autograd.grad(z.sum(), a)  # z* = 2/(1-a), dz*/da = 2/(1-a)^2 = 8
    assert ga.item() == pytest.approx(8.0, rel=1e-10)


def test_unrolled_second_derivative_matches_closed_form():
    gx, gxa = _issue_example("unrolled")
    assert gx == pytest.approx(1 / (1 - 0.5) + 0.25, rel=1e-10)
    assert gxa == pytest.approx(1 / (1 - 0.5) ** 2 + 2 * 0.5, rel=1e-9)


def _tanh_problem():
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(3, 3, generator=gen, dtype=F64)
    w = 0.5 * w / torch.linalg.matrix_norm(w, 2)
    x = torch.randn(2, 3, generator=gen, dtype=F64)
    return w, x


def _hessian(fn, x):
    """Row by row, with x a leaf (torch.autograd.functional.hessian would pass a view of x,
    a non-leaf tensor, for which the implicit backward refuses create_graph)."""
    x = x.detach().clone().requires_grad_()
    (g,) = torch.autograd.grad(fn(x), x, create_graph=True)
    rows = [torch.autograd.grad(gi, x, retain_graph=True)[0] for gi in g.flatten()]
    return torch.stack(rows).reshape(*x.shape, *x.shape)


def _hessian_wrt_x(backward, x, w):
    def loss(xv):
        z, _ = dk.fixed_point(
            lambda z: torch.tanh(z @ w.T + xv), torch.zeros_like(xv), "anderson", backward,
            tol=1e-13, max_iter=300,
        )  # fmt: skip
        return (z**2).sum()

    return _hessian(loss, x)


@pytest.mark.parametrize("backward", ["implicit", "unrolled"])
def test_hessian_matches_an_explicit_converged_unroll(backward):
    w, x = _tanh_problem()

    def reference(xv):  # the fixed point by plain iteration, differentiated as a deep network
        z = torch.zeros_like(xv)
        for _ in range(200):
            z = torch.tanh(z @ w.T + xv)
        return (z**2).sum()

    exact = torch.autograd.functional.hessian(reference, x)
    torch.testing.assert_close(_hessian(reference, x), exact, atol=1e-12, rtol=0)  # the helper
    got = _hessian_wrt_x(backward, x, w)
    torch.testing.assert_close(got, exact, atol=1e-8, rtol=1e-8)


def test_implicit_mixed_second_derivative_in_a_weight_matches_the_unroll():
    # d/dW of the gradient with respect to x: the hyper-gradient shape (through z* and u).
    w0, x0 = _tanh_problem()

    def grad_x(w, xv, backward):
        if backward is None:
            z = torch.zeros_like(xv)
            for _ in range(200):
                z = torch.tanh(z @ w.T + xv)
        else:
            z, _ = dk.fixed_point(lambda z: torch.tanh(z @ w.T + xv), torch.zeros_like(xv),
                                  backward=backward, tol=1e-13, max_iter=300)  # fmt: skip
        (g,) = torch.autograd.grad((z**3).sum(), xv, create_graph=True)
        return torch.autograd.grad((g * torch.arange(6.0, dtype=F64).view(2, 3)).sum(), w)[0]

    got = grad_x(w0.clone().requires_grad_(), x0.clone().requires_grad_(), "implicit")
    exact = grad_x(w0.clone().requires_grad_(), x0.clone().requires_grad_(), None)
    torch.testing.assert_close(got, exact, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("steps", [1, 3])
def test_phantom_and_one_step_second_derivatives_are_those_of_their_explicit_steps(steps):
    w, x = _tanh_problem()
    z_star = dk.solve(lambda z: torch.tanh(z @ w.T + x), torch.zeros_like(x), tol=1e-13).z

    def explicit(xv):  # k steps from the detached z*: what phantom differentiates
        z = z_star
        for _ in range(steps):
            z = torch.tanh(z @ w.T + xv)
        return (z**2).sum()

    exact = torch.autograd.functional.hessian(explicit, x)
    backward = dk.OneStep() if steps == 1 else dk.Phantom(steps=steps)
    torch.testing.assert_close(_hessian_wrt_x(backward, x, w), exact, atol=1e-10, rtol=1e-8)


def test_deq_layer_with_a_computed_input_refuses_create_graph_and_keeps_first_derivatives():
    # x from an encoder is a non-leaf tensor: naming it as an input of the node would count its
    # history's path to shared leaves twice (the per-step states of a recurrent DEQ), so refuse.
    w = torch.nn.Parameter(_tanh_problem()[0])
    enc = torch.nn.Linear(3, 3).double()
    inp = torch.randn(2, 3, dtype=F64, requires_grad=True)
    deq = dk.DEQ(lambda z, x: torch.tanh(z @ w.T + x), tol=1e-12, max_iter=200)
    z, _ = deq(enc(inp))
    with pytest.raises(NotImplementedError, match="non-leaf tensor made before the solve"):
        torch.autograd.grad((z**3).sum(), inp, create_graph=True)
    z, _ = deq(enc(inp))
    (g,) = torch.autograd.grad((z**3).sum(), w)
    x = enc(inp)
    ref = torch.zeros_like(x)
    for _ in range(200):
        ref = torch.tanh(ref @ w.T + x)
    (g_ref,) = torch.autograd.grad((ref**3).sum(), w)
    torch.testing.assert_close(g, g_ref, atol=1e-9, rtol=1e-9)
