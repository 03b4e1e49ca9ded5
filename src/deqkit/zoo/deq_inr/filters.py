"""Multiplicative-filter-network filters: functions of the coordinates only.

A multiplicative filter network (Fathony et al., ICLR 2021) multiplies its hidden state by
filters g_l(x) that depend on the input coordinates x alone. A DEQ over such a network evaluates
the same filters at every solver iteration, so :class:`FilterBank` computes all of them once per
batch and the cell only reads them (Huang, Bai, Kolter, "(Implicit)²", NeurIPS 2021).

Initialisation follows the (Implicit)² code: with L layers (L + 1 filters) the frequency scale is
``input_scale / sqrt(L + 1)``, phases are uniform in [−π, π], and Gabor envelopes have
γ ~ Gamma(α / (L + 1), 1) with centres μ ~ U(−1, 1).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["FILTERS", "FilterBank", "FourierFilter", "GaborFilter"]

#: Filter kinds accepted by :class:`FilterBank`.
FILTERS = ("fourier", "gabor")


class FourierFilter(nn.Module):
    """g(x) = sin(Ωx + φ): one random Fourier feature per hidden unit.

    Args:
        in_features: coordinate dimension d.
        width: number of hidden units D.
        scale: multiplies the default (uniform ±1/√d) frequency initialisation.

    >>> g = FourierFilter(2, 8, scale=10.0)
    >>> out = g(torch.zeros(5, 2))
    >>> out.shape, bool((out.abs() <= 1).all())
    (torch.Size([5, 8]), True)
    """

    def __init__(self, in_features: int, width: int, scale: float):
        super().__init__()
        self.linear = nn.Linear(in_features, width)
        with torch.no_grad():
            self.linear.weight.mul_(scale)
            self.linear.bias.uniform_(-math.pi, math.pi)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.linear(x))


class GaborFilter(nn.Module):
    """g(x) = sin(Ωx + φ) · exp(−½ γ ‖x − μ‖²): a localised Fourier feature (a Gabor wavelet).

    Args:
        in_features: coordinate dimension d.
        width: number of hidden units D.
        scale: frequency scale; each unit's frequencies are further scaled by √γ so that
            narrow envelopes carry high frequencies.
        alpha: shape of the Gamma(α, 1) prior on the envelope precisions γ.

    >>> g = GaborFilter(2, 8, scale=10.0, alpha=3.0)
    >>> out = g(torch.rand(5, 2) * 2 - 1)
    >>> out.shape, bool((out.abs() <= 1).all())
    (torch.Size([5, 8]), True)
    """

    def __init__(self, in_features: int, width: int, scale: float, alpha: float):
        super().__init__()
        self.linear = nn.Linear(in_features, width)
        self.mu = nn.Parameter(torch.rand(width, in_features) * 2 - 1)
        self.gamma = nn.Parameter(torch.distributions.Gamma(alpha, 1.0).sample((width,)))
        with torch.no_grad():
            self.linear.weight.mul_(scale * self.gamma.sqrt()[:, None])
            self.linear.bias.uniform_(-math.pi, math.pi)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ‖x − μ‖² expanded so that no (N, D, d) tensor is formed.
        dist = (x * x).sum(1, keepdim=True) - 2 * x @ self.mu.T + (self.mu * self.mu).sum(1)
        # relu keeps the precision non-negative if training pushes γ below zero.
        envelope = torch.exp(-0.5 * torch.relu(self.gamma) * dist.clamp_min(0.0))
        return torch.sin(self.linear(x)) * envelope


class FilterBank(nn.Module):
    """The L + 1 filters of an L-layer MFN, evaluated together once per batch.

    Args:
        kind: "fourier" or "gabor".
        in_features: coordinate dimension d.
        width: hidden units D.
        layers: L, the number of multiplicative layers (the bank holds L + 1 filters).
        input_scale: overall frequency scale (about the grid resolution for images).
        alpha: Gabor envelope prior shape before the division by L + 1.

    Returns (from ``forward``): a tuple of L + 1 tensors of shape (N, D), filter 0 first.

    >>> bank = FilterBank("gabor", 2, 16, layers=4, input_scale=64.0)
    >>> [tuple(g.shape) for g in bank(torch.zeros(3, 2))]
    [(3, 16), (3, 16), (3, 16), (3, 16), (3, 16)]
    """

    def __init__(
        self,
        kind: str,
        in_features: int,
        width: int,
        layers: int,
        input_scale: float,
        alpha: float = 6.0,
    ):
        super().__init__()
        if kind not in FILTERS:
            raise ValueError(f"unknown filter {kind!r}; choose one of {FILTERS}")
        n = layers + 1
        scale = input_scale / math.sqrt(n)
        if kind == "fourier":
            filters = [FourierFilter(in_features, width, scale) for _ in range(n)]
        else:
            filters = [GaborFilter(in_features, width, scale, alpha / n) for _ in range(n)]
        self.kind = kind
        self.filters = nn.ModuleList(filters)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(g(x) for g in self.filters)
