"""Anderson under the unrolled backward when the history's residuals are exactly zero.

A linear map in two dimensions is solved exactly by Anderson within a few steps; after that every
residual in the history is 0, the Gram system is singular and the mixing falls back to the newest
iterate. The fallback used to be chosen by ``torch.where`` after an infinite solve, so the gradient
through the discarded branch was 0 · Inf = NaN.
"""

import torch

import deqkit as dk

F64 = torch.float64


def test_unrolled_gradient_is_finite_after_exact_convergence():
    gen = torch.Generator().manual_seed(0)
    a = 0.3 * torch.randn(2, 2, dtype=F64, generator=gen)
    x = torch.randn(3, 2, dtype=F64, generator=gen, requires_grad=True)
    z, sol = dk.fixed_point(
        lambda z: z @ a.T + x,
        torch.zeros(3, 2, dtype=F64),
        "anderson",
        "unrolled",
        tol=1e-300,
        max_iter=12,
        on_failure="ignore",
    )
    assert (sol.residual == 0).any()  # some sample's residual history reached exact zero
    (grad,) = torch.autograd.grad(z.sum(), x)
    assert torch.isfinite(grad).all()
    # z* = (I − A)⁻¹ x, so d(sum z*)/dx = 1ᵀ (I − A)⁻¹ for every sample. The unrolled derivative of
    # the iterates is that only up to the ill-conditioned Gram systems near convergence (≈ 0.5 %).
    expected = torch.linalg.solve(torch.eye(2, dtype=F64) - a.T, torch.ones(2, dtype=F64))
    torch.testing.assert_close(grad, expected.expand(3, 2), rtol=1e-2, atol=0)
