"""Sequential DDIM sampling and DEQ-DDIM: the whole chain as one fixed point over all S states
(Pokle, Geng, Kolter, "Deep Equilibrium Approaches to Diffusion Models", NeurIPS 2022).

With the DDIM step ``x_prev = a·x + b·ε(x, t) + σ·z`` and ᾱ₁ … the cumulative alphas, dividing
by √ᾱ makes the chain a cumulative sum:
``x_i / √ᾱ_prev_i = x_T / √ᾱ_T + Σ_{j≤i} (b_j·ε(x_{j−1}, t_j) + σ_j·z_j) / √ᾱ_prev_j``,
where x_{j−1} is the input of step j (x_T for j = 1). The joint map h(X) evaluates ε on all S
inputs [x_T, x_1, …, x_{S−1}] in ONE batched call and returns the S cumulative sums. Its unique
fixed point is the sequential trajectory, and h is lower-triangular in time (state i depends on
states before it only), so Picard iteration is exact after S steps; Anderson is usually faster.

Stopping: a global relative residual over all states is dominated by the states with the
largest norm and does not bound the error of x₀ (zoo.md §7d). :class:`StateAnderson` is the
core's Anderson with the stopping residual measured per state, as the largest per-pixel RMS
of ``h(X) − X`` over the states ("per_state") or that of x₀ alone ("final").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

import deqkit as dk

from .schedule import DDIMSteps

__all__ = [
    "CRITERIA",
    "DEQSample",
    "StateAnderson",
    "ddim_chain",
    "ddim_sample",
    "deq_sample",
    "draw_noise",
    "joint_map",
    "state_residual",
]

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
CRITERIA = ("per_state", "final", "global")


def _col(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.to(like.device, like.dtype).view(-1, *([1] * (like.dim() - 1)))


def draw_noise(steps: DDIMSteps, x_T: torch.Tensor, generator=None) -> torch.Tensor | None:
    """Pre-drawn per-step noise (S, *x_T.shape) for η > 0, so that sampling is a deterministic
    map of (x_T, noise); None when every σ is 0.

    >>> from deqkit.zoo.deq_ddim.schedule import alpha_bars, ddim_steps
    >>> s = ddim_steps(alpha_bars("linear"), 4, eta=1.0)
    >>> draw_noise(s, torch.zeros(2, 3)).shape
    torch.Size([4, 2, 3])
    """
    if not bool((steps.sigma > 0).any()):
        return None
    return torch.randn(
        (len(steps), *x_T.shape), dtype=x_T.dtype, device=x_T.device, generator=generator
    )


@torch.no_grad()
def ddim_sample(
    eps_model: EpsModel, x_T: torch.Tensor, steps: DDIMSteps, noise: torch.Tensor | None = None
) -> torch.Tensor:
    """Sequential DDIM (S denoiser calls, one after another); returns x₀.

    >>> from deqkit.zoo.deq_ddim.schedule import alpha_bars, ddim_steps
    >>> s = ddim_steps(alpha_bars("linear"), 5)
    >>> ddim_sample(lambda x, t: torch.zeros_like(x), torch.ones(1, 2), s).shape
    torch.Size([1, 2])
    """
    return ddim_chain(eps_model, x_T, steps, noise)


def ddim_chain(
    eps_model: EpsModel, x_T: torch.Tensor, steps: DDIMSteps, noise: torch.Tensor | None = None
) -> torch.Tensor:
    """:func:`ddim_sample` recording gradients (backpropagation through the chain).

    >>> from deqkit.zoo.deq_ddim.schedule import alpha_bars, ddim_steps
    >>> x_T = torch.ones(1, 2, requires_grad=True)
    >>> ddim_chain(lambda x, t: 0.1 * x, x_T, ddim_steps(alpha_bars("linear"), 5)).requires_grad
    True
    """
    _check_noise(steps, x_T, noise)
    x = x_T
    for i in range(len(steps)):
        t = steps.t[i].expand(x.shape[0]).to(x.device)
        x = steps.a[i].item() * x + steps.b[i].item() * eps_model(x, t)
        if noise is not None:
            x = x + steps.sigma[i].item() * noise[i]
    return x


def _check_noise(steps: DDIMSteps, x_T: torch.Tensor, noise: torch.Tensor | None) -> None:
    if noise is None:
        if bool((steps.sigma > 0).any()):
            raise ValueError("eta > 0 needs pre-drawn noise (draw_noise(steps, x_T)), got None")
        return
    if noise.shape != (len(steps), *x_T.shape):
        raise ValueError(
            f"noise must have shape {(len(steps), *x_T.shape)}, got {tuple(noise.shape)}"
        )


def joint_map(
    eps_model: EpsModel, x_T: torch.Tensor, steps: DDIMSteps, noise: torch.Tensor | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """h: states X (B, S, *image) -> (B, S, *image), one batched ε call on all S step inputs
    followed by the weighted cumulative sum (see the module docstring). X[:, i] is the state
    after step i; X[:, -1] is x₀.

    >>> from deqkit.zoo.deq_ddim.schedule import alpha_bars, ddim_steps
    >>> s = ddim_steps(alpha_bars("linear"), 3)
    >>> h = joint_map(lambda x, t: torch.zeros_like(x), torch.ones(2, 4), s)
    >>> h(torch.zeros(2, 3, 4)).shape
    torch.Size([2, 3, 4])
    """
    _check_noise(steps, x_T, noise)
    b, shape, n = x_T.shape[0], x_T.shape[1:], len(steps)
    dtype = x_T.dtype
    t_all = steps.t.to(x_T.device).repeat_interleave(b)  # step-major, like the inputs below
    view = (1, n) + (1,) * len(shape)
    coef_eps = (steps.b / steps.abar_prev.sqrt()).to(x_T.device, dtype).view(view)
    scale_out = steps.abar_prev.sqrt().to(x_T.device, dtype).view(view)
    start = (x_T / steps.abar[0].sqrt().item()).unsqueeze(1)
    drift = 0.0
    if noise is not None:
        coef_z = (steps.sigma / steps.abar_prev.sqrt()).to(x_T.device, dtype).view(view)
        drift = coef_z * noise.transpose(0, 1)

    def h(states: torch.Tensor) -> torch.Tensor:
        if n > 1 and torch.is_grad_enabled() and x_T.requires_grad and not states.requires_grad:
            # Optimising x_T through a phantom/one-step backward (states held constant): only
            # step 1 reads x_T, so evaluating it apart keeps the other S − 1 denoiser calls out
            # of the autograd graph when the denoiser is frozen (no input of theirs needs a
            # gradient), and the saved activations do not grow with S.
            first = eps_model(x_T, t_all[:b]).unsqueeze(1)
            rest = states[:, :-1].transpose(0, 1).reshape((n - 1) * b, *shape)
            rest = eps_model(rest, t_all[b:]).reshape(n - 1, b, *shape).transpose(0, 1)
            eps = torch.cat([first, rest], dim=1)
        else:
            inputs = torch.cat([x_T.unsqueeze(1), states[:, :-1]], dim=1)  # step i: state i-1
            flat = inputs.transpose(0, 1).reshape(n * b, *shape)
            eps = eps_model(flat, t_all).reshape(n, b, *shape).transpose(0, 1)
        return scale_out * (start + torch.cumsum(coef_eps * eps + drift, dim=1))

    return h


@dataclass(frozen=True)
class StateAnderson(dk.Anderson):
    """``dk.Anderson`` on a joint trajectory of ``n_states`` equal blocks whose stopping residual
    (used with ``stop_mode="abs"``) is the per-pixel RMS of ``f(z) − z``: the largest over the
    states (``criterion="per_state"``) or that of the last state, x₀ (``"final"``). The Anderson
    step itself is unchanged.

    >>> s = StateAnderson(m=3, n_states=2)
    >>> z = torch.zeros(1, 4); fz = torch.tensor([[3.0, 4.0, 0.0, 1.0]])
    >>> round(s.residual(s.init(z, fz))[0, 0].item(), 4)  # max(RMS(3, 4), RMS(0, 1))
    3.5355
    """

    n_states: int = 1
    criterion: str = "per_state"

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.n_states, int) or self.n_states < 1:
            raise ValueError(f"n_states must be a positive int, got {self.n_states!r}")
        if self.criterion not in ("per_state", "final"):
            raise ValueError(f"criterion must be 'per_state' or 'final', got {self.criterion!r}")

    def residual(self, memory):
        return state_residual(super().residual(memory), self.n_states, self.criterion)[:, None]


def state_residual(g: torch.Tensor, n_states: int, criterion: str = "per_state") -> torch.Tensor:
    """(B,) stopping residual of ``g = f(z) − z`` (B, ...) holding ``n_states`` equal blocks per
    sample: the largest per-pixel RMS over the blocks (``"per_state"``) or the last one's.

    >>> state_residual(torch.tensor([[3.0, 4.0, 0.0, 1.0]]), 2).tolist()
    [3.535533905029297]
    """
    rms = g.reshape(g.shape[0], n_states, -1).pow(2).mean(dim=2).sqrt()
    return rms.amax(dim=1) if criterion == "per_state" else rms[:, -1]


@dataclass(frozen=True)
class DEQSample:
    """A DEQ sample: ``x0`` (B, *image), the ``trajectory`` (B, S, *image), the core's
    ``solution``, the sequential rounds (solver iterations = batched denoiser calls), the wall
    time in seconds, and per image whether the stopping criterion holds at the returned
    trajectory (``converged``) with its ``residual``, as the core reports them: its final check
    reads :class:`StateAnderson`'s per-state residual."""

    x0: torch.Tensor
    trajectory: torch.Tensor
    solution: dk.Solution
    rounds: int
    seconds: float
    converged: torch.Tensor
    residual: torch.Tensor


@torch.no_grad()
def deq_sample(
    eps_model: EpsModel,
    x_T: torch.Tensor,
    steps: DDIMSteps,
    noise: torch.Tensor | None = None,
    *,
    tol: float = 1e-3,
    max_iter: int | None = None,
    criterion: str = "per_state",
    m: int = 5,
    lam: float = 1e-3,
    init: torch.Tensor | None = None,
) -> DEQSample:
    """DEQ-DDIM: solve X = h(X) with Anderson; returns x₀ and the solve's statistics.

    ``tol`` bounds the per-pixel RMS residual of every state (``criterion="per_state"``) or of
    x₀ (``"final"``); ``"global"`` is the paper's ‖h(X) − X‖/‖h(X)‖ over the whole trajectory,
    kept for comparison. ``max_iter`` defaults to 2S + 2 (Picard is exact after S + 1).

    >>> from deqkit.zoo.deq_ddim.schedule import alpha_bars, ddim_steps
    >>> s = ddim_steps(alpha_bars("linear"), 4)
    >>> eps = lambda x, t: 0.1 * x
    >>> out = deq_sample(eps, torch.ones(1, 3, dtype=torch.float64), s, tol=1e-10)
    >>> ref = ddim_sample(eps, torch.ones(1, 3, dtype=torch.float64), s)
    >>> bool(torch.allclose(out.x0, ref)), out.converged.tolist()
    (True, [True])
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown stopping criterion {criterion!r}; choose one of {CRITERIA}")
    n = len(steps)
    h = joint_map(eps_model, x_T, steps, noise)
    if init is None:
        init = x_T.unsqueeze(1).expand(-1, n, *x_T.shape[1:]).contiguous()
    if criterion == "global":
        solver, stop_mode = dk.Anderson(m=m, lam=lam), "rel"
    else:
        solver, stop_mode = StateAnderson(m=m, lam=lam, n_states=n, criterion=criterion), "abs"
    start = time.perf_counter()
    sol = dk.solve(
        h, init, solver, tol=tol, max_iter=max_iter or 2 * n + 2, stop_mode=stop_mode,
        on_failure="ignore",
    )  # fmt: skip
    seconds = time.perf_counter() - start
    rounds = int(sol.nstep.max())
    return DEQSample(sol.z[:, -1], sol.z, sol, rounds, seconds, sol.converged, sol.residual)
