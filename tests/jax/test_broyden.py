"""JAX Broyden's chunked history (issue 20): the same iterates and final estimate as torch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import deqkit as dk
import deqkit.jax as dkj
from deqkit.jax.solvers import iterate
from deqkit.jax.solvers.broyden import CHUNK


def _cells(W, U, b, x):
    tW, tU, tb, tx = (torch.tensor(a) for a in (W, U, b, x))
    jW, jU, jb, jx = map(jnp.asarray, (W, U, b, x))
    return (
        lambda z: torch.tanh(z @ tW.T + tx @ tU.T + tb),
        lambda z: jnp.tanh(z @ jW.T + jx @ jU.T + jb),
    )


@pytest.mark.parametrize("update, memory", [("bad", 3), ("good", CHUNK + 2)])
def test_state_and_iterates_match_torch_when_samples_stop_apart(update, memory, weights):
    # Samples far apart stop at different steps; memory 3 makes the ring wrap, CHUNK + 2 makes
    # the product loop read a partly filled second chunk.
    W, U, b, x = weights
    x = x * np.array([0.1, 0.5, 2.0, 4.0])[:, None]
    tf, jf = _cells(W, U, b, x)
    opts = {"tol": 1e-10, "max_iter": 60}
    t = dk.solve(
        tf,
        torch.zeros(4, 5, dtype=torch.float64),
        dk.Broyden(update=update, memory=memory),
        keep_state=True,
        **opts,
    )
    j = iterate(
        dkj.Broyden(update=update, memory=memory), jf, jnp.zeros((4, 5)), keep_state=True, **opts
    )
    assert len(set(t.nstep.tolist())) > 1  # the samples did stop apart
    np.testing.assert_array_equal(np.asarray(j.nstep), t.nstep.numpy())
    np.testing.assert_allclose(np.asarray(j.z), t.z.numpy(), rtol=0, atol=1e-12)
    rank = t.state.rank
    assert j.state.us.shape == (4, memory, 5)
    # A sample that stopped keeps its estimate, in both backends, slot for slot (the last
    # terms scale like 1/‖Δg‖² near the solution, so rounding differences grow with them).
    for mine, theirs in ((j.state.us, t.state.us), (j.state.vs, t.state.vs)):
        theirs = theirs.numpy()
        np.testing.assert_allclose(
            np.asarray(mine[:, :rank]), theirs, rtol=1e-2, atol=1e-6 * np.abs(theirs).max()
        )
    assert not np.asarray(j.state.us[:, rank:]).any()


def test_unrolled_solve_reads_every_chunk_and_gives_the_same_iterates(weights):
    W, U, b, x = weights
    _, jf = _cells(W, U, b, x)
    solver = dkj.Broyden(memory=CHUNK + 1)
    assert solver.static().dynamic is False and solver.dynamic is True
    assert solver.static().memory == solver.memory
    opts = {"tol": 1e-10, "max_iter": 30}
    a = iterate(solver, jf, jnp.zeros((4, 5)), **opts)
    b_ = iterate(solver, jf, jnp.zeros((4, 5)), unroll=True, **opts)
    np.testing.assert_array_equal(np.asarray(a.nstep), np.asarray(b_.nstep))
    np.testing.assert_allclose(np.asarray(a.z), np.asarray(b_.z), rtol=0, atol=1e-14)
    # Reverse mode passes through the unrolled solve (a dynamic-length loop would refuse).
    grad = jax.grad(
        lambda s: iterate(
            solver, lambda z: jf(z) * s, jnp.zeros((4, 5)), unroll=True, **opts
        ).z.sum()
    )(1.0)
    assert np.isfinite(float(grad))
