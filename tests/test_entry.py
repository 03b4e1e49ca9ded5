"""The entry points at their edges: empty batches, has_aux, forward-mode AD, torch.func."""

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import deqkit as dk

F64 = torch.float64


# --- empty batch --------------------------------------------------------------------------------


def test_empty_batch_solve_and_fixed_point_return_empty_solutions():
    # Before: "cannot reshape tensor of 0 elements" from the state packing.
    x = torch.ones(0, 3, requires_grad=True)
    sol = dk.solve(lambda z: 0.5 * z + 1.0, torch.zeros(0, 3))
    assert sol.z.shape == (0, 3) and sol.status == dk.Status.CONVERGED and sol.nfev == 0
    assert sol.converged.shape == (0,)
    z, sol = dk.fixed_point(lambda z: 0.5 * z + x, torch.zeros(0, 3))
    assert z.shape == (0, 3) and sol.status == dk.Status.CONVERGED
    z.sum().backward()
    assert x.grad is not None and x.grad.shape == (0, 3)


def test_empty_batch_pytree_state_and_deq_layer():
    sol = dk.solve(lambda s: {"a": 0.5 * s["a"], "b": s["b"]}, {"a": torch.zeros(0, 3),
                   "b": torch.zeros(0, 2, 2)})  # fmt: skip
    assert sol.z["a"].shape == (0, 3) and sol.z["b"].shape == (0, 2, 2)
    lin = torch.nn.Linear(3, 3)
    deq = dk.DEQ(lambda z, x: torch.tanh(0.5 * lin(z) + x))
    z, sol = deq(torch.zeros(0, 3))
    assert z.shape == (0, 3) and sol.status == dk.Status.CONVERGED
    z.sum().backward()
    assert lin.weight.grad is not None and float(lin.weight.grad.abs().sum()) == 0.0
    # The toolkit terms of an empty batch are zero (a mean over no samples would be NaN).
    skip = dk.DEQ(lambda z, x: torch.tanh(0.5 * lin(z) + x), init=torch.nn.Linear(3, 3),
                  jac_reg_prob=1.0)  # fmt: skip
    z, sol = skip(torch.zeros(0, 3))
    assert sol.outputs.skip_loss.item() == 0.0 and sol.outputs.jac_loss.item() == 0.0


# --- has_aux ------------------------------------------------------------------------------------


def test_has_aux_solve_returns_aux_at_the_returned_z():
    def f(z):
        return 0.5 * z + 1.0, {"norm": z.norm(dim=1)}

    sol = dk.solve(f, torch.zeros(2, 3), tol=1e-10, max_iter=100, has_aux=True)
    torch.testing.assert_close(sol.aux["norm"], sol.z.norm(dim=1))
    assert dk.solve(lambda z: 0.5 * z, torch.ones(1, 1)).aux is None
    with pytest.raises(TypeError, match=r"has_aux=True f must return a \(state, aux\) pair"):
        dk.solve(lambda z: 0.5 * z, torch.ones(1, 1), has_aux=True)
    with pytest.raises(TypeError, match="has_aux must be a bool"):
        dk.solve(lambda z: 0.5 * z, torch.ones(1, 1), has_aux="yes")


@pytest.mark.parametrize("backward", ["implicit", "unrolled", "phantom"])
def test_has_aux_gradients_through_z_star_and_directly(backward):
    # z* = x / (1 - a) per element; aux = a * sum(z*)  =>  d aux / d a = sum(z*) + a sum(x)/(1-a)^2
    a = torch.tensor(0.5, dtype=F64, requires_grad=True)
    x = torch.tensor([[1.0, 2.0]], dtype=F64)

    def f(z):
        return a * z + x, a * z.sum()

    bwd = dk.Phantom(steps=60) if backward == "phantom" else backward
    # Plain iteration for the unrolled case: unrolled Anderson on this linear map converges
    # exactly and its Gram solve then gives a NaN gradient (a solver matter, not aux's).
    solver = "fixed_point" if backward == "unrolled" else "anderson"
    z, sol = dk.fixed_point(f, torch.zeros(1, 2, dtype=F64), solver, bwd, tol=1e-13,
                            max_iter=200, has_aux=True)  # fmt: skip
    (g,) = torch.autograd.grad(sol.aux, a)
    z_star = x.sum() / (1 - 0.5)
    exact = z_star + 0.5 * x.sum() / (1 - 0.5) ** 2
    assert sol.aux.item() == pytest.approx(0.5 * z_star.item(), rel=1e-10)
    assert g.item() == pytest.approx(exact.item(), rel=1e-9)


# --- forward-mode AD ----------------------------------------------------------------------------


def _tanh():
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(4, 4, generator=gen, dtype=F64)
    w = 0.6 * w / torch.linalg.matrix_norm(w, 2)
    x = torch.randn(3, 4, generator=gen, dtype=F64)
    dx = torch.randn(3, 4, generator=gen, dtype=F64)
    return w, x, dx


def _exact_jvp(w, x, dx):
    z = dk.solve(lambda z: torch.tanh(z @ w.T + x), torch.zeros_like(x), tol=1e-14,
                 max_iter=300).z  # fmt: skip
    out = []
    for i in range(len(x)):  # ż = (I - J)^-1 diag(s) dx with s = 1 - tanh^2 at z*
        s = 1 - z[i] ** 2
        jac = s[:, None] * w
        out.append(torch.linalg.solve(torch.eye(4, dtype=F64) - jac, s * dx[i]))
    return z, torch.stack(out)


@pytest.mark.parametrize("grad_enabled", [True, False])
def test_forward_mode_implicit_tangent_matches_closed_form(grad_enabled):
    # Before: the dual tensor's tangent flowed into the solver and failed deep inside it.
    w, x, dx = _tanh()
    z_exact, zdot_exact = _exact_jvp(w, x, dx)
    with fwAD.dual_level(), torch.set_grad_enabled(grad_enabled):
        xd = fwAD.make_dual(x, dx)
        z, sol = dk.fixed_point(lambda z: torch.tanh(z @ w.T + xd), torch.zeros_like(x),
                                tol=1e-13, max_iter=200)  # fmt: skip
        primal, tangent = fwAD.unpack_dual(z)
    torch.testing.assert_close(primal, z_exact, atol=1e-11, rtol=0)
    torch.testing.assert_close(tangent, zdot_exact, atol=1e-10, rtol=0)
    assert sol.status == dk.Status.CONVERGED


def test_forward_mode_keeps_the_reverse_gradient():
    w, x, dx = _tanh()
    w = w.clone().requires_grad_()
    ref = w.detach().clone().requires_grad_()
    with fwAD.dual_level():
        xd = fwAD.make_dual(x, dx)
        z, _ = dk.fixed_point(lambda z: torch.tanh(z @ w.T + xd), torch.zeros_like(x), tol=1e-13,
                              max_iter=200)  # fmt: skip
        primal = fwAD.unpack_dual(z).primal
        # Forward-over-reverse (a backward while the tangents are live) is refused, not wrong.
        with pytest.raises(NotImplementedError, match="forward-over-reverse"):
            primal.sum().backward(retain_graph=True)
    primal.sum().backward()  # after the dual level: the ordinary reverse gradient
    z_ref, _ = dk.fixed_point(lambda z: torch.tanh(z @ ref.T + x), torch.zeros_like(x), tol=1e-13,
                              max_iter=200)  # fmt: skip
    z_ref.sum().backward()
    torch.testing.assert_close(w.grad, ref.grad, atol=1e-10, rtol=0)


def test_forward_mode_phantom_is_the_tangent_of_its_steps():
    w, x, dx = _tanh()
    z_star = dk.solve(lambda z: torch.tanh(z @ w.T + x), torch.zeros_like(x), tol=1e-14,
                      max_iter=300).z  # fmt: skip
    with fwAD.dual_level():
        xd = fwAD.make_dual(x, dx)
        z, _ = dk.fixed_point(lambda z: torch.tanh(z @ w.T + xd), torch.zeros_like(x),
                              backward=dk.Phantom(steps=2), tol=1e-13, max_iter=200)  # fmt: skip
        ref = torch.tanh(torch.tanh(z_star @ w.T + xd) @ w.T + xd)
        got, want = fwAD.unpack_dual(z).tangent, fwAD.unpack_dual(ref).tangent
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


@pytest.mark.parametrize("backward", ["unrolled", "shine"])
def test_forward_mode_refused_where_the_tangent_needs_the_solver(backward):
    w, x, dx = _tanh()
    solver = "broyden" if backward == "shine" else "anderson"
    with fwAD.dual_level(), pytest.raises(NotImplementedError, match="forward-mode AD through"):
        xd = fwAD.make_dual(x, dx)
        dk.fixed_point(lambda z: torch.tanh(z @ w.T + xd), torch.zeros_like(x), solver,
                       backward)  # fmt: skip


def test_forward_mode_solve_drops_tangents():
    w, x, dx = _tanh()
    with fwAD.dual_level():
        xd = fwAD.make_dual(x, dx)
        sol = dk.solve(lambda z: torch.tanh(z @ w.T + xd), torch.zeros_like(x), tol=1e-10)
        assert fwAD.unpack_dual(sol.z).tangent is None
    assert sol.status == dk.Status.CONVERGED


# --- torch.func ---------------------------------------------------------------------------------


def _loss(x):
    z, _ = dk.fixed_point(lambda z: torch.tanh(0.5 * z + x), torch.zeros(2, 3, dtype=F64))
    return z.sum()


@pytest.mark.parametrize(
    "transform",
    [
        lambda x: torch.func.grad(_loss)(x),
        lambda x: torch.func.vmap(lambda xi: _loss(xi.expand(2, 3)))(x),
        lambda x: torch.func.jvp(_loss, (x,), (torch.ones_like(x),)),
        lambda x: torch.func.vmap(lambda z0: dk.solve(lambda z: 0.5 * z, z0[None]).z)(x),
    ],
    ids=["grad", "vmap", "jvp", "vmap-z0"],
)
def test_torch_func_transforms_are_refused_early(transform):
    # Before: failures deep inside the solver (host bookkeeping on wrapped tensors).
    x = torch.randn(2, 3, dtype=F64)
    with pytest.raises(NotImplementedError, match="torch.func-transformed tensor"):
        transform(x)


def test_forward_mode_through_the_deq_layer():
    w, x, dx = _tanh()
    _, zdot_exact = _exact_jvp(w, x, dx)
    deq = dk.DEQ(lambda z, x: torch.tanh(z @ w.T + x), tol=1e-13, max_iter=200)
    with fwAD.dual_level():
        z, sol = deq(fwAD.make_dual(x, dx))
        tangent = fwAD.unpack_dual(z).tangent
    torch.testing.assert_close(tangent, zdot_exact, atol=1e-10, rtol=0)
