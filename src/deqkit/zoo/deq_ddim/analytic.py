"""The exact noise predictor for Gaussian data x₀ ~ N(μ, s²I) (zoo.md §7d): with
x_t = √ᾱ·x₀ + √(1 − ᾱ)·ε, E[ε | x_t] = √(1 − ᾱ)·(x_t − √ᾱ·μ) / (ᾱ·s² + 1 − ᾱ)."""

from __future__ import annotations

import torch

__all__ = ["GaussianEps"]


class GaussianEps:
    """ε*(x, t) for data N(``mean``, ``std``²I) under the training schedule ``abar``.

    >>> from deqkit.zoo.deq_ddim.schedule import alpha_bars
    >>> eps = GaussianEps(alpha_bars("linear", 10), mean=0.0, std=1.0)
    >>> eps(torch.ones(1, 2, dtype=torch.float64), torch.tensor([9])).shape
    torch.Size([1, 2])
    """

    def __init__(self, abar: torch.Tensor, mean: float | torch.Tensor = 0.0, std: float = 1.0):
        if not std > 0:
            raise ValueError(f"std must be > 0, got {std!r}")
        self.abar, self.mean, self.std = abar, mean, std

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.abar.to(x.device, x.dtype)[t].view(-1, *([1] * (x.dim() - 1)))
        return (1 - a).sqrt() * (x - a.sqrt() * self.mean) / (a * self.std**2 + 1 - a)
