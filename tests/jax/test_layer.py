"""The JAX layer's hooks against the torch layer's: the same numbers on the same float64 cell
(pretraining, Skip-DEQ initialiser, sampled states), the Jacobian penalty against its formula."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import deqkit as dk
import deqkit.jax as dkj

F64 = torch.float64


def zeros():
    return jnp.zeros((4, 5))  # float64: built after the module fixture enables x64


def jax_cell(p, z, x):
    return jnp.tanh(z @ p["W"].T + x @ p["U"].T + p["b"])


def torch_cell(p):
    return lambda z, x: torch.tanh(z @ p["W"].T + x @ p["U"].T + p["b"])


def both(weights):
    W, U, b, x = weights
    jp = {"W": jnp.asarray(W), "U": jnp.asarray(U), "b": jnp.asarray(b), "V": jnp.ones((5, 3))}
    tp = {k: torch.tensor(np.asarray(v), dtype=F64, requires_grad=True) for k, v in jp.items()}
    return jp, jnp.asarray(x), tp, torch.tensor(x, dtype=F64)


def assert_close(a, b, **kw):
    np.testing.assert_allclose(np.asarray(a), b.detach().numpy(), **{"rtol": 1e-10, **kw})


def test_pretraining_matches_torch(weights):
    jp, jx, tp, tx = both(weights)
    tdeq = dk.DEQ(torch_cell(tp), tol=1e-3).pretrain(3)
    tz, tsol = tdeq(tx, z0=torch.zeros(4, 5, dtype=F64))
    (tz**2).sum().backward()

    jdeq = dkj.DEQ(jax_cell, tol=1e-3).pretrain(3)

    def loss(p, deq):
        z, sol = deq(p, jx, z0=zeros())
        return jnp.sum(z**2), (z, sol)

    (_, (jz, jsol)), grads = jax.value_and_grad(loss, has_aux=True)(jp, jdeq)
    assert_close(jz, tz)
    assert_close(jsol.residual, tsol.residual)
    assert jsol.nstep.tolist() == tsol.nstep.tolist() and int(jsol.nfev) == tsol.nfev == 3
    assert jsol.status.name == tsol.status.name
    for k in ("W", "U", "b"):
        assert_close(grads[k], tp[k].grad)
    # pretrain(0) solves again
    _, sol = dataclasses.replace(jdeq, solver=dkj.FixedPoint()).pretrain(0)(jp, jx, z0=zeros())
    assert int(sol.nfev) > 3 and sol.status == dkj.Status.CONVERGED


def test_skip_deq_initialiser_matches_torch(weights):
    jp, jx, tp, tx = both(weights)
    init = torch.nn.Linear(3, 5, bias=False).double()
    with torch.no_grad():
        init.weight.copy_(tp["V"])
    tdeq = dk.DEQ(torch_cell(tp), "fixed_point", init=init, tol=1e-10, max_iter=60)
    tz, tsol = tdeq(tx)
    tsol.outputs.skip_loss.backward()

    jdeq = dkj.DEQ(jax_cell, "fixed_point", init=lambda p, x: x @ p["V"].T, tol=1e-10, max_iter=60)

    def skip(p):
        z, sol = jdeq(p, jx)
        return sol.outputs.skip_loss, (z, sol)

    (loss, (jz, jsol)), grads = jax.value_and_grad(skip, has_aux=True)(jp)
    assert float(loss) > 0.01  # z0 = V x is far from z*: the term has something to train
    assert_close(loss, tsol.outputs.skip_loss)
    assert_close(jz, tz, rtol=1e-8)
    assert_close(grads["V"], init.weight.grad, rtol=1e-8)
    # z* is held constant in the loss: no gradient reaches the cell's weights through it
    assert not np.asarray(grads["W"]).any()
    assert (
        dkj.DEQ(jax_cell, "fixed_point")(jp, jx, z0=zeros())[1].outputs.skip_loss is None
    )  # no init, no term


def test_sampled_states_match_torch(weights):
    # The plain fixed-point solver keeps no memory, so the pieces give torch's path exactly.
    jp, jx, tp, tx = both(weights)
    opts = {"tol": 1e-14, "max_iter": 12, "n_states": 3, "on_failure": "ignore"}
    _, tsol = dk.DEQ(torch_cell(tp), "fixed_point", **opts)(tx, z0=torch.zeros(4, 5, dtype=F64))
    jz, jsol = dkj.DEQ(jax_cell, "fixed_point", **opts)(jp, jx, z0=zeros())
    assert len(jsol.outputs.states) == len(tsol.outputs.states) == 3
    # The intermediate states (one f step from the iterates at 4 and 8, as torch's one-step
    # gradient gives them); the last is the layer's z (torch's implicit output is f(z*), JAX's
    # z* itself, which differ by the unconverged residual here).
    for js, ts in zip(jsol.outputs.states[:-1], tsol.outputs.states[:-1], strict=True):
        assert_close(js, ts, rtol=1e-12)
    assert jsol.outputs.states[-1] is jz
    assert jsol.nstep.tolist() == tsol.nstep.tolist()

    def correction(p):
        z, sol = dkj.DEQ(jax_cell, "fixed_point", **opts)(p, jx, z0=zeros())
        return dkj.fixed_point_correction(
            lambda s, t: jnp.mean((s - t) ** 2), sol.outputs.states, 0.0
        )

    assert np.abs(jax.grad(correction)(jp)["W"]).sum() > 0


def test_jacobian_penalty_is_hutchinsons_formula():
    A = jnp.array([[0.6, 0.1], [0.0, 0.8]])
    z, key = jnp.zeros((3, 2)), jax.random.PRNGKey(3)

    def by_hand(A):
        probes = jax.random.normal(key, (4, 3, 2), z.dtype)
        return jnp.mean(jnp.sum((probes @ A) ** 2, axis=(0, 2)) / (4 * 2))

    def penalty(A):
        return dkj.jacobian_penalty(lambda z: z @ A.T, z, key, vecs=4)

    np.testing.assert_allclose(penalty(A), by_hand(A), rtol=1e-12)
    np.testing.assert_allclose(jax.grad(penalty)(A), jax.grad(by_hand)(A), rtol=1e-12)
    # The expectation ‖A‖²_F / D, as the torch estimate converges to it.
    big = jnp.zeros((20000, 2))
    exact = float(jnp.sum(A**2)) / 2
    assert abs(float(dkj.jacobian_penalty(lambda z: z @ A.T, big, key)) - exact) < 0.02
    t_est = dk.jacobian_penalty(
        lambda z: z @ torch.tensor(np.asarray(A)).T, torch.zeros(20000, 2, dtype=F64)
    )
    assert abs(t_est.item() - exact) < 0.02


def test_layer_jacobian_penalty_hook(weights):
    jp, jx, _, _ = both(weights)
    deq = dkj.DEQ(jax_cell, "fixed_point", tol=1e-10, max_iter=60, jac_reg_prob=1.0, jac_reg_vecs=2)
    key = jax.random.PRNGKey(0)
    z, sol = deq(jp, jx, z0=zeros(), key=key)
    want = dkj.jacobian_penalty(lambda z: jax_cell(jp, z, jx), z, jax.random.split(key)[1], vecs=2)
    np.testing.assert_allclose(sol.outputs.jac_loss, want, rtol=1e-12)
    grad = jax.grad(lambda p: deq(p, jx, z0=zeros(), key=key)[1].outputs.jac_loss)(jp)
    assert np.abs(grad["W"]).sum() > 0
    assert deq(jp, jx, z0=zeros(), training=False)[1].outputs.jac_loss is None
    with pytest.raises(ValueError, match="needs key="):
        deq(jp, jx, z0=zeros())
    half = dkj.DEQ(jax_cell, "fixed_point", tol=1e-10, max_iter=60, jac_reg_prob=0.5)
    run = jax.jit(lambda k: half(jp, jx, z0=zeros(), key=k)[1].outputs.jac_loss)
    values = [float(run(k)) for k in jax.random.split(key, 8)]
    assert 0 < sum(v == 0.0 for v in values) < 8  # drawn on some calls, not on others


def test_layer_options_are_checked():
    with pytest.raises(TypeError, match="cell must be callable"):
        dkj.DEQ(3)
    with pytest.raises(ValueError, match="jac_reg_prob"):
        dkj.DEQ(jax_cell, jac_reg_prob=2.0)
    with pytest.raises(ValueError, match="n_states"):
        dkj.DEQ(jax_cell, n_states=100, max_iter=10)
    hash(dkj.DEQ(jax_cell))  # static under jax.jit
