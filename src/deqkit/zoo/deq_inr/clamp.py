"""Spectral norm *clamped* at a target, the variant the (Implicit)² code uses.

``dk.apply_norm(..., "spectral", target=t)`` scales every weight to σ(W) = t exactly. The
(Implicit)² code instead divides by max(1, σ(W)/t): a weight whose spectral norm is below t is
left alone, so training may shrink the map below t (a DEQ-MFN can then weaken its feedback
towards the explicit one-pass network). This module gives that variant for the ablation
``model.norm_mode: clamp``; σ is estimated by power iteration in training mode, as usual.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["ClampedSpectralNorm", "apply_clamped_spectral_norm"]


class ClampedSpectralNorm(nn.Module):
    """Parametrisation W ↦ W / max(1, σ̂(W)/target), σ̂ by power iteration (training mode).

    Args:
        weight: the (out, in) weight it will parametrise (shapes the power-iteration vectors).
        target: the largest spectral norm allowed.
        n_power_iterations: power-iteration steps per training-mode evaluation.

    >>> layer = nn.Linear(6, 6)
    >>> with torch.no_grad():
    ...     _ = layer.weight.mul_(10)
    >>> _ = apply_clamped_spectral_norm(layer, target=0.97, n_power_iterations=50)
    >>> round(torch.linalg.matrix_norm(layer.weight, 2).item(), 3)
    0.97
    >>> small = apply_clamped_spectral_norm(nn.Linear(6, 6, bias=False), target=100.0)
    >>> bool(torch.equal(small.weight, small.parametrizations.weight.original))
    True
    """

    def __init__(self, weight: torch.Tensor, target: float, n_power_iterations: int = 5):
        super().__init__()
        self.target = float(target)
        self.n_power_iterations = int(n_power_iterations)
        u = nn.functional.normalize(torch.randn(weight.shape[0], dtype=weight.dtype), dim=0)
        v = nn.functional.normalize(torch.randn(weight.shape[1], dtype=weight.dtype), dim=0)
        self.register_buffer("u", u)
        self.register_buffer("v", v)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                for _ in range(self.n_power_iterations):
                    self.v.copy_(nn.functional.normalize(weight.T @ self.u, dim=0))
                    self.u.copy_(nn.functional.normalize(weight @ self.v, dim=0))
        sigma = self.u.clone() @ weight @ self.v.clone()
        return weight / torch.clamp(sigma / self.target, min=1.0)


def apply_clamped_spectral_norm(
    module: nn.Module, target: float, n_power_iterations: int = 5
) -> nn.Module:
    """Clamp the spectral norm of every ``nn.Linear`` inside ``module`` at ``target``.

    Returns ``module``. The first evaluation runs the power iteration (the vectors start
    random), so σ̂ is sharp after a few training-mode calls.
    """
    for layer in [m for m in module.modules() if isinstance(m, nn.Linear)]:
        parametrize.register_parametrization(
            layer, "weight", ClampedSpectralNorm(layer.weight, target, n_power_iterations)
        )
    return module
