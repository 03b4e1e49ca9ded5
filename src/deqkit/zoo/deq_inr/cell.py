"""The DEQ-MFN map f(z; g): a multiplicative filter network with the state injected at its input.

f(z; g) = g_L ⊙ (W_L(… g_1 ⊙ (W_1 (z + g_0) + b_1) …) + b_L), with the filters g = (g_0, …, g_L)
computed from the coordinates beforehand (:class:`~.filters.FilterBank`). From z = 0 one
application is exactly the explicit L-layer MFN of Fathony et al. (ICLR 2021), so the DEQ and its
explicit baseline have the same parameters. |g_l| ≤ 1, so with every ‖W_l‖₂ ≤ 0.97 (spectral
norm) f is a contraction in z with Lipschitz constant ≤ 0.97^L and the fixed point is unique.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["MFNCell"]


class MFNCell(nn.Module):
    """The L linear maps of the MFN; ``forward(z, g)`` applies f(z; g) once.

    Args:
        width: hidden units D.
        layers: L, the number of multiplicative layers.

    >>> cell = MFNCell(8, layers=2)
    >>> g = tuple(torch.ones(3, 8) for _ in range(3))
    >>> cell(torch.zeros(3, 8), g).shape
    torch.Size([3, 8])
    """

    def __init__(self, width: int, layers: int):
        super().__init__()
        self.width = width
        self.linears = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))
        bound = math.sqrt(1.0 / width)  # the (Implicit)² initialisation of W
        with torch.no_grad():
            for linear in self.linears:
                linear.weight.uniform_(-bound, bound)

    def initial_state(self, g: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """z0 = 0, shaped like one filter output (N, D)."""
        return torch.zeros_like(g[0])

    def forward(self, z: torch.Tensor, g: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if len(g) != len(self.linears) + 1:
            raise ValueError(f"expected {len(self.linears) + 1} filter outputs, got {len(g)}")
        z = z + g[0]
        for linear, gate in zip(self.linears, g[1:], strict=True):
            z = gate * linear(z)
        return z
