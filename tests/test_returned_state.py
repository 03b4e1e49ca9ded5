"""The state fixed_point returns is the one its Solution describes (status, residuals).

The implicit and SHINE backwards used to return f(z*) — one more Picard step — as the value, so
the returned z was not the state whose residual the solver reported (and where ρ(J_f) > 1, one
more step moves away from the fixed point Anderson or Broyden found).
"""

import pytest
import torch

import deqkit as dk

F64 = torch.float64


def _problem():
    gen = torch.Generator().manual_seed(3)
    w = (0.9 * torch.randn(5, 5, dtype=F64, generator=gen)).requires_grad_()
    x = torch.randn(4, 5, dtype=F64, generator=gen)
    return (lambda z: torch.tanh(z @ w.T + x)), torch.zeros(4, 5, dtype=F64), w


@pytest.mark.parametrize("backward", ["implicit", "shine", "unrolled"])
@pytest.mark.parametrize("max_iter", [3, 60])  # stopped early (MAX_ITER) and converged
def test_returned_z_is_the_solved_state(backward, max_iter):
    f, z0, w = _problem()
    kw = dict(tol=1e-10, max_iter=max_iter, on_failure="ignore")
    z, sol = dk.fixed_point(f, z0, "broyden", backward, **kw)
    reference = dk.solve(f, z0, "broyden", **kw)
    assert sol.status == reference.status
    # Bitwise for the backwards that attach to the solved z*; the unrolled solve records its
    # iterations with torch ops (not the host path), which may round differently (1 ulp).
    exact = backward != "unrolled"
    torch.testing.assert_close(z.detach(), reference.z, rtol=0, atol=0 if exact else 1e-14)
    with torch.no_grad():
        residual = (f(z) - z).flatten(1).norm(dim=1)
    torch.testing.assert_close(residual, sol.abs_residual, rtol=1e-12, atol=1e-15)
    (grad,) = torch.autograd.grad(z.sum(), w)  # the value changed, the gradient path did not
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
