"""The same cell with the same weights in torch and JAX: same z*, nstep, nfev and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import deqkit as dk
import deqkit.jax as dkj

# (forward solver, adjoint solver, stop_mode): every solver runs forward and backward once.
CASES = {
    "fixed_point": (dk.FixedPoint(), "anderson", "abs"),
    "anderson": (dk.Anderson(m=5), "broyden", "rel"),
    "broyden": (dk.Broyden(line_search=True), "fixed_point", "rel"),
    "broyden_bad": (dk.Broyden(update="bad", memory=4), dk.Broyden(update="bad"), "abs"),
    "newton_krylov": (dk.NewtonKrylov(krylov_dim=6), "newton_krylov", "rel"),
}
OPTS = {"tol": 1e-12, "max_iter": 100}
BACK = {"tol": 1e-13, "max_iter": 100}


def torch_run(solver, adjoint, W, U, b, x, stop_mode):
    params = [torch.tensor(a, requires_grad=True) for a in (W, U, b)]
    tx = torch.tensor(x)

    def f(z):
        return torch.tanh(z @ params[0].T + tx @ params[1].T + params[2])

    z0 = torch.zeros(x.shape[0], W.shape[0], dtype=torch.float64)
    z, sol = dk.fixed_point(
        f, z0, solver, dk.Implicit(solver=adjoint, **BACK), stop_mode=stop_mode, trace=True, **OPTS
    )
    (z**2).sum().backward()
    return sol, [p.grad.numpy() for p in params]


def jax_loss(solver, adjoint, x, stop_mode):
    # The torch options object is handed to JAX as is: one configuration serves both backends.
    def loss(params):
        W, U, b = params
        z0 = jnp.zeros((x.shape[0], W.shape[0]))
        z, sol = dkj.fixed_point(
            lambda z: jnp.tanh(z @ W.T + x @ U.T + b),
            z0,
            solver,
            dkj.Implicit(solver=adjoint, **BACK),
            stop_mode=stop_mode,
            trace=True,
            **OPTS,
        )
        return (z**2).sum(), sol

    return jax.jit(jax.value_and_grad(loss, has_aux=True))


@pytest.mark.parametrize("name", sorted(CASES))
def test_torch_and_jax_agree(name, weights):
    W, U, b, x = weights
    solver, adjoint, stop_mode = CASES[name]
    tsol, tgrads = torch_run(solver, adjoint, W, U, b, x, stop_mode)
    run = jax_loss(solver, adjoint, jnp.asarray(x), stop_mode)
    (_, jsol), jgrads = run(tuple(map(jnp.asarray, (W, U, b))))
    assert int(jsol.status) == dkj.Status.CONVERGED == tsol.status
    np.testing.assert_allclose(np.asarray(jsol.z), tsol.z.detach().numpy(), rtol=0, atol=1e-10)
    assert np.abs(np.asarray(jsol.nstep) - tsol.nstep.numpy()).max() <= 1
    assert abs(int(jsol.nfev) - tsol.nfev) <= 1
    steps = int(tsol.nstep.max())
    trace = np.asarray(jsol.trace)
    np.testing.assert_allclose(trace[:, :steps], tsol.trace.numpy(), rtol=1e-6, atol=1e-14)
    assert np.isnan(trace[:, steps:]).all()
    np.testing.assert_allclose(np.asarray(jsol.abs_residual), tsol.abs_residual.numpy(), atol=1e-14)
    for jg, tg in zip(jgrads, tgrads, strict=True):
        np.testing.assert_allclose(np.asarray(jg), tg, rtol=1e-8, atol=1e-10)


def _coupled(lib, W, U, b, x):
    """tanh(W z + U x + b) + 0.5 tanh(batch mean of z): f couples the samples."""
    if lib == "torch":
        W, U, b, x = (torch.tensor(a) for a in (W, U, b, x))
        return lambda z: torch.tanh(z @ W.T + x @ U.T + b) + 0.5 * torch.tanh(z.mean(0, True))
    W, U, b, x = map(jnp.asarray, (W, U, b, x))
    return lambda z: jnp.tanh(z @ W.T + x @ U.T + b) + 0.5 * jnp.tanh(z.mean(0, keepdims=True))


# Per-sample Anderson/Broyden on a coupled f do not converge (their per-sample models miss the
# coupling), and a non-converging run amplifies rounding; fixed point shows the frozen-sample rule.
@pytest.mark.parametrize(
    "solver, scope",
    [
        ("fixed_point", "sample"),
        ("anderson", "batch"),
        ("broyden", "batch"),
        ("fixed_point", "batch"),
    ],
)
def test_batch_coupled_f_same_steps_and_true_status(scope, solver, weights):
    W, U, b, x = weights
    x = x * np.array([0.1, 0.1, 3.0, 3.0])[:, None]  # samples that converge far apart
    opts = {"tol": 1e-8, "max_iter": 200, "stop_scope": scope, "on_failure": "ignore"}
    t = dk.solve(
        _coupled("torch", W, U, b, x), torch.zeros(4, 5, dtype=torch.float64), solver, **opts
    )
    f = _coupled("jax", W, U, b, x)
    j = dkj.solve(f, jnp.zeros((4, 5)), solver, **opts)
    assert int(j.status) == int(t.status)
    np.testing.assert_array_equal(np.asarray(j.nstep), t.nstep.numpy())
    np.testing.assert_array_equal(np.asarray(j.converged), t.converged.numpy())
    assert int(j.nfev) == t.nfev
    np.testing.assert_allclose(np.asarray(j.z), t.z.numpy(), rtol=0, atol=1e-10)
    # The reported residuals are those of f at the returned z (f evaluated on the batch whole).
    fz = np.asarray(f(j.z))
    true = np.linalg.norm(fz - np.asarray(j.z), axis=1) / np.linalg.norm(fz, axis=1)
    np.testing.assert_allclose(np.asarray(j.rel_residual), true, rtol=1e-9, atol=1e-15)
    assert bool(j.converged.all()) == bool((true <= opts["tol"]).all())


@pytest.mark.parametrize("solver", ["fixed_point", "anderson", "broyden"])
def test_float32_agrees(solver, weights):
    W, U, b, x = (np.asarray(a, np.float32) for a in weights)
    tW, tU, tb, tx = (torch.tensor(a) for a in (W, U, b, x))
    opts = {"tol": 1e-5, "max_iter": 100}
    t = dk.solve(lambda z: torch.tanh(z @ tW.T + tx @ tU.T + tb), torch.zeros(4, 5), solver, **opts)
    jW, jU, jb, jx = map(jnp.asarray, (W, U, b, x))  # float32 arrays stay float32 under x64
    z0 = jnp.zeros((4, 5), jnp.float32)
    j = dkj.solve(lambda z: jnp.tanh(z @ jW.T + jx @ jU.T + jb), z0, solver, **opts)
    assert j.z.dtype == jnp.float32
    z = np.asarray(j.z)
    assert int(j.status) == int(t.status) == dkj.Status.CONVERGED
    assert np.abs(np.asarray(j.nstep) - t.nstep.numpy()).max() <= 1
    np.testing.assert_allclose(z, t.z.numpy(), rtol=0, atol=1e-5)
