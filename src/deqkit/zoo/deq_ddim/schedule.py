"""Noise schedules (DDPM linear, improved-DDPM cosine) and the DDIM step coefficients.

Every sampler here writes one DDIM/DDPM step as the linear recursion
``x_prev = a·x + b·ε(x, t) + σ·z`` (Song, Meng, Ermon, "Denoising Diffusion Implicit Models",
ICLR 2021, eq. 12), so the sequential chain and the joint fixed point share one set of numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["SCHEDULES", "DDIMSteps", "alpha_bars", "betas", "ddim_steps"]

SCHEDULES = ("linear", "cosine")


def betas(schedule: str, num_steps: int = 1000, dtype=torch.float64) -> torch.Tensor:
    """The β_t of a training schedule: "linear" (1e-4 → 0.02, Ho et al. 2020) or "cosine"
    (Nichol & Dhariwal 2021, s = 0.008, β clipped at 0.999).

    >>> b = betas("linear", 1000)
    >>> round(b[0].item(), 6), round(b[-1].item(), 6)
    (0.0001, 0.02)
    >>> bool((betas("cosine", 10) < 1).all())
    True
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown beta schedule {schedule!r}; choose one of {SCHEDULES}")
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    if schedule == "linear":
        # Scaled so that the schedule's signal-to-noise span is that of T = 1000 for any T.
        scale = 1000 / num_steps
        return torch.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=dtype)
    s = 0.008
    steps = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=0.999).to(dtype)


def alpha_bars(schedule: str, num_steps: int = 1000, dtype=torch.float64) -> torch.Tensor:
    """ᾱ_t = Π_{s≤t} (1 − β_s), t = 0 … num_steps − 1.

    >>> a = alpha_bars("linear", 1000)
    >>> a.shape, bool((a[1:] < a[:-1]).all())
    (torch.Size([1000]), True)
    """
    return torch.cumprod(1 - betas(schedule, num_steps, torch.float64), 0).to(dtype)


@dataclass(frozen=True)
class DDIMSteps:
    """The S sampling steps, from the noisiest: step i maps x at ``t[i]`` to x at ``t[i+1]``
    (x_0 after the last) as ``x_prev = a[i]·x + b[i]·ε(x, t[i]) + sigma[i]·z_i``.
    ``abar[i]`` is ᾱ at ``t[i]``, ``abar_prev[i]`` that of the state it produces (1 for x_0)."""

    t: torch.Tensor
    abar: torch.Tensor
    abar_prev: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor
    sigma: torch.Tensor

    def __len__(self) -> int:
        return len(self.t)


def ddim_steps(abar: torch.Tensor, num_steps: int, eta: float = 0.0) -> DDIMSteps:
    """Uniformly skipped DDIM steps over a training schedule ``abar``; ``eta`` = 0 is DDIM,
    ``eta`` = 1 the DDPM posterior variance.

    >>> s = ddim_steps(alpha_bars("linear"), 10)
    >>> len(s), s.t[0].item(), s.t[-1].item(), s.abar_prev[-1].item(), s.sigma.abs().max().item()
    (10, 900, 0, 1.0, 0.0)
    """
    n_train = len(abar)
    if not isinstance(num_steps, int) or not 1 <= num_steps <= n_train:
        raise ValueError(f"num_steps must be an int in [1, {n_train}], got {num_steps!r}")
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0, got {eta!r}")
    t = torch.arange(0, n_train, n_train // num_steps)[:num_steps].flip(0)
    abar = abar.to(torch.float64)
    cur = abar[t]
    prev = torch.cat([abar[t[1:]], abar.new_ones(1)])
    sigma = eta * torch.sqrt((1 - prev) / (1 - cur) * (1 - cur / prev))
    # x_prev = √ᾱ_prev·x̂₀ + √(1 − ᾱ_prev − σ²)·ε + σz with x̂₀ = (x − √(1 − ᾱ)·ε)/√ᾱ.
    a = torch.sqrt(prev / cur)
    b = torch.sqrt((1 - prev - sigma**2).clamp(min=0)) - a * torch.sqrt(1 - cur)
    return DDIMSteps(t=t, abar=cur, abar_prev=prev, a=a, b=b, sigma=sigma)
