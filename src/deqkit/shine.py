"""The forward Broyden solve's inverse-Jacobian estimate, kept for the SHINE backward.

SHINE (Ramzi et al., "SHINE: SHaring the INverse Estimate from the forward pass for bi-level
optimization and implicit models", ICLR 2022) skips the adjoint solve: Broyden already holds
J_g⁻¹ ≈ −I + U Vᵀ for g(z) = f(z) − z, so the implicit gradient u = (I − J_fᵀ)⁻¹ a is
approximated by u ≈ −(J_g⁻¹)ᵀ a = a − V (Uᵀ a) at the cost of two small matrix products.

:class:`InverseRecorder` wraps a :class:`~deqkit.Broyden` solver to keep its memory after the
solve (``fixed_point`` does this when the backward is :class:`~deqkit.Shine`). A sample that
stops early keeps the estimate it had when it stopped: later proposals for a frozen sample are
not evaluated at the proposal, so their secant pairs would be wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .solvers import Broyden, Solver

__all__ = ["BroydenInverse", "InverseRecorder"]


@dataclass(frozen=True)
class BroydenInverse:
    """Low-rank estimate J_g⁻¹ ≈ −I + Σᵢ uᵢ vᵢᵀ per sample (``us``, ``vs``: (B, m, D))."""

    us: torch.Tensor
    vs: torch.Tensor

    @property
    def rank(self) -> int:
        return self.us.shape[1]

    def adjoint(self, grad: torch.Tensor) -> torch.Tensor:
        """Approximate solution u of u = grad + J_fᵀ u, i.e. u ≈ grad − V (Uᵀ grad)."""
        if self.rank == 0:
            return grad
        us, vs = self.us.to(grad.dtype), self.vs.to(grad.dtype)
        coeff = torch.bmm(us, grad.unsqueeze(2))
        return grad - torch.bmm(vs.transpose(1, 2), coeff).squeeze(2)


class InverseRecorder(Solver):
    """Runs a Broyden solver unchanged and remembers each sample's inverse-Jacobian estimate.

    >>> import deqkit as dk
    >>> from deqkit.solvers import iterate
    >>> rec = InverseRecorder(dk.Broyden())
    >>> sol = iterate(rec, lambda z: 0.5 * z + 1.0, torch.zeros(2, 3), tol=1e-8)
    >>> g = torch.ones(2, 3)  # the exact adjoint of f = 0.5 z + 1 is u = g / (1 - 0.5) = 2 g
    >>> torch.allclose(rec.inverse(g).adjoint(g), 2 * g)
    True
    """

    name = "broyden"

    def __init__(self, inner: Solver):
        if not isinstance(inner, Broyden):
            raise ValueError(
                "the SHINE backward reuses Broyden's inverse-Jacobian estimate; use "
                f"solver='broyden' or a dk.Broyden object, got {inner!r}"
            )
        self.inner = inner
        self._memory = None
        self._frozen: tuple[torch.Tensor, torch.Tensor] | None = None

    def init(self, z, fz):
        self._memory = self.inner.init(z, fz)
        self._frozen = None
        return self._memory

    def step(self, evaluate, z, fz, memory, active):
        some_frozen = not bool(active.all())
        if some_frozen and self._frozen is None:
            # Broyden writes its ring buffers in place: copy before this step overwrites them.
            # Slots not yet written are uninitialised; zero them, a zero term being no term, as
            # the frozen samples' estimate is later read up to the batch's (larger) rank.
            us, vs = memory[0].clone(), memory[1].clone()
            us[:, memory[2] :] = 0.0
            vs[:, memory[2] :] = 0.0
            self._frozen = (us, vs)
        z_new, fz_new, memory = self.inner.step(evaluate, z, fz, memory, active)
        if self._frozen is not None:
            keep = active.view(-1, 1, 1)
            us, vs = self._frozen
            self._frozen = (torch.where(keep, memory[0], us), torch.where(keep, memory[1], vs))
        self._memory = memory
        return z_new, fz_new, memory

    def inverse(self, like: torch.Tensor) -> BroydenInverse:
        """The recorded estimate (rank 0, i.e. −I, if the solve took no Broyden step)."""
        if self._memory is None:
            empty = like.new_zeros(like.shape[0], 0, like.shape[1])
            return BroydenInverse(empty, empty)
        us, vs = self._frozen if self._frozen is not None else self._memory[:2]
        used = min(self._memory[2], self.inner.memory)
        return BroydenInverse(us[:, :used].detach(), vs[:, :used].detach())
