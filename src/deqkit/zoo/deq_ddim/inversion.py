"""DDIM inversion as one joint fixed point: the x_T whose deterministic (η = 0) DDIM chain ends
exactly at a given x₀ (Pokle, Geng, Kolter, NeurIPS 2022, §4).

Step i maps its input y_{i−1} to y_i = a_i·y_{i−1} + b_i·ε(y_{i−1}, t_i) (y_0 = x_T, y_S = x₀).
Solved for the input, y_{i−1} = (y_i − b_i·ε(y_{i−1}, t_i)) / a_i; dividing by √ᾱ turns the
chain into a sum from the clean end:
``y_{i−1} / √ᾱ_i = x₀ − Σ_{j≥i} b_j·ε(y_{j−1}, t_j) / √ᾱ_prev_j``. The map evaluates ε on all S
inputs at once (each at its own state, so unlike sampling it is not triangular) and its fixed
point is an exact inverse of the DDIM sampler. (The usual "DDIM inversion" approximates
ε(y_{i−1}) by ε(y_i) and runs once; this solves the implicit equations.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

import deqkit as dk

from .sampler import StateAnderson
from .schedule import DDIMSteps

__all__ = ["Inversion", "inversion_map", "invert"]


def inversion_map(
    eps_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    steps: DDIMSteps,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """g: step inputs Y (B, S, *image) -> (B, S, *image); Y[:, 0] is x_T.

    >>> from deqkit.zoo.deq_ddim.schedule import alpha_bars, ddim_steps
    >>> g = inversion_map(lambda x, t: torch.zeros_like(x), torch.ones(2, 4),
    ...                   ddim_steps(alpha_bars("linear"), 3))
    >>> g(torch.zeros(2, 3, 4)).shape
    torch.Size([2, 3, 4])
    """
    if bool((steps.sigma > 0).any()):
        raise ValueError("inversion needs the deterministic sampler: build the steps with eta=0")
    b, shape, n = x0.shape[0], x0.shape[1:], len(steps)
    t_all = steps.t.to(x0.device).repeat_interleave(b)
    view = (1, n) + (1,) * len(shape)
    coef = (steps.b / steps.abar_prev.sqrt()).to(x0.device, x0.dtype).view(view)
    scale = steps.abar.sqrt().to(x0.device, x0.dtype).view(view)

    def g(inputs: torch.Tensor) -> torch.Tensor:
        flat = inputs.transpose(0, 1).reshape(n * b, *shape)
        eps = eps_model(flat, t_all).reshape(n, b, *shape).transpose(0, 1)
        tail = torch.flip(torch.cumsum(torch.flip(coef * eps, [1]), 1), [1])  # Σ_{j≥i}
        return scale * (x0.unsqueeze(1) - tail)

    return g


@dataclass(frozen=True)
class Inversion:
    """``x_T`` (B, *image), the step inputs ``states`` (B, S, *image), the core's ``solution``,
    the wall time and per image whether every state's RMS residual is within tol there
    (``converged``: the per-state criterion at the returned states, as the core reports it)."""

    x_T: torch.Tensor
    states: torch.Tensor
    solution: dk.Solution
    seconds: float
    converged: torch.Tensor


@torch.no_grad()
def invert(
    eps_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    steps: DDIMSteps,
    *,
    tol: float = 1e-5,
    max_iter: int = 100,
    m: int = 5,
    lam: float = 1e-3,
) -> Inversion:
    """Solve the inversion fixed point with Anderson, stopping when every state's per-pixel
    RMS residual is below ``tol``.

    >>> from deqkit.zoo.deq_ddim.schedule import alpha_bars, ddim_steps
    >>> from deqkit.zoo.deq_ddim.sampler import ddim_sample
    >>> s = ddim_steps(alpha_bars("linear"), 5)
    >>> eps = lambda x, t: 0.1 * x
    >>> x_T = torch.ones(1, 3, dtype=torch.float64)
    >>> inv = invert(eps, ddim_sample(eps, x_T, s), s, tol=1e-12)
    >>> bool(torch.allclose(inv.x_T, x_T)), inv.converged.tolist()
    (True, [True])
    """
    n = len(steps)
    g = inversion_map(eps_model, x0, steps)
    init = x0.unsqueeze(1).expand(-1, n, *x0.shape[1:]).contiguous()
    solver = StateAnderson(m=m, lam=lam, n_states=n, criterion="per_state")
    start = time.perf_counter()
    sol = dk.solve(g, init, solver, tol=tol, max_iter=max_iter, stop_mode="abs",
                   on_failure="ignore")  # fmt: skip
    seconds = time.perf_counter() - start
    return Inversion(sol.z[:, 0], sol.z, sol, seconds, sol.converged)
