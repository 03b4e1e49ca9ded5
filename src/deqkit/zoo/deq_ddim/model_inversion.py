"""Model inversion: optimise x_T so that the deterministic (η = 0) DDIM sample x₀(x_T) matches a
target image (Pokle, Geng, Kolter, NeurIPS 2022, §4.2), with Adam on the per-pixel MSE.

Three ways to get ∂MSE/∂x_T:

* ``"backprop"`` — autograd through the S sequential denoiser calls (the baseline); the saved
  activations grow with S.
* ``"deq-implicit"`` — x₀ from the joint fixed point (:func:`~.sampler.joint_map`) solved by the
  core's Anderson, gradient by the core's implicit backward (``dk.Implicit``): the adjoint fixed
  point over the trajectory. The Jacobian of the joint map is strictly block lower-triangular,
  so the adjoint Picard iteration is exact after S steps and the gradient equals backprop's.
* ``"deq-phantom"`` — the same forward, gradient by ``dk.Phantom`` (k damped steps from the fixed
  point; the paper's k = 1, τ = 0.1): an inexact, cheap direction whose graph holds one denoiser
  call on x_T only, so its saved activations do not depend on S.

The DEQ forward is warm-started from the previous iteration's trajectory (x_T moves a little per
Adam step), with a loose per-state tolerance; the denoiser is frozen while inverting.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields

import torch
from torch import nn

import deqkit as dk

from .sampler import EpsModel, StateAnderson, ddim_chain, ddim_sample, joint_map
from .schedule import DDIMSteps

__all__ = ["CLOCKS", "METHODS", "InversionOptions", "InversionRun", "invert_model", "reconstruct"]

METHODS = ("deq-implicit", "deq-phantom", "backprop")
#: "wall": elapsed time; "process": this process's CPU time, which on one thread is the wall
#: time the run would take on an idle core (a shared machine's load does not count).
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


@dataclass(frozen=True)
class InversionOptions:
    """Adam (``lr``) for ``iters`` steps or until ``seconds`` of optimisation wall time; the DEQ
    forward: per-state RMS ``tol``, ``max_iter`` rounds, Anderson ``m``; the phantom backward's
    ``phantom_steps`` and ``phantom_damping``; the implicit adjoint's ``adjoint_tol`` (relative)
    and ``adjoint_max_iter``; ``log_points`` snapshots of x_T for the MSE-vs-time curve;
    ``clock``: "wall" or "process" (CPU time, see :data:`CLOCKS`).

    >>> InversionOptions.from_dict({"lr": 0.05}).lr
    0.05
    """

    method: str = "deq-phantom"
    lr: float = 0.05
    iters: int = 200
    seconds: float | None = None
    tol: float = 1e-2
    max_iter: int = 15
    m: int = 3
    phantom_steps: int = 1
    phantom_damping: float = 0.1
    adjoint_tol: float = 1e-4
    adjoint_max_iter: int = 30
    log_points: int = 20
    clock: str = "wall"

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown inversion method {self.method!r}; choose one of {METHODS}")
        for name in ("iters", "max_iter", "m", "phantom_steps", "adjoint_max_iter", "log_points"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"inversion {name} must be a positive int, got {value!r}")
        for name in ("lr", "tol", "adjoint_tol"):
            if not getattr(self, name) > 0:
                raise ValueError(f"inversion {name} must be > 0, got {getattr(self, name)!r}")
        if not 0 < self.phantom_damping <= 1:
            raise ValueError(f"phantom_damping must be in (0, 1], got {self.phantom_damping!r}")
        if self.clock not in CLOCKS:
            raise ValueError(f"inversion clock must be one of {tuple(CLOCKS)}, got {self.clock!r}")
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"inversion seconds must be > 0, got {self.seconds!r}")

    @classmethod
    def from_dict(cls, options: dict) -> InversionOptions:
        """Build from a dict, rejecting unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown inversion options {unknown}; known: {sorted(known)}")
        return cls(**options)


@dataclass
class InversionRun:
    """The optimised ``x_T``; per logged point the optimisation wall ``seconds``, the iteration
    and the per-pixel MSE of the *sequential* DDIM x₀ from that x_T to the target (measured
    outside the clock); ``converged``: share of DEQ forward solves (images × iterations) whose
    every state reached ``tol`` (None for backprop); ``rounds``: mean DEQ rounds per forward."""

    x_T: torch.Tensor
    seconds: list[float] = field(default_factory=list)
    iters: list[int] = field(default_factory=list)
    mse: list[float] = field(default_factory=list)
    converged: float | None = None
    rounds: float | None = None


@contextlib.contextmanager
def frozen(module: nn.Module | None) -> Iterator[None]:
    """Parameters of ``module`` do not require gradients inside the block (restored after).

    >>> lin = nn.Linear(2, 2)
    >>> with frozen(lin):
    ...     lin.weight.requires_grad
    False
    >>> lin.weight.requires_grad
    True
    """
    params = [p for p in module.parameters() if p.requires_grad] if module is not None else []
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def reconstruct(
    eps_model: EpsModel,
    x_T: torch.Tensor,
    steps: DDIMSteps,
    options: InversionOptions,
    init: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, dk.Solution | None]:
    """x₀(x_T) carrying the gradient of ``options.method``, the DEQ's detached fixed point
    (B, S, *image) and its solution (both None for backprop). ``init`` warm-starts the DEQ.

    The forward is ``dk.solve``; the backward strategy's ``attach`` then ties the gradient to
    z* (what ``dk.fixed_point`` does), so z* itself stays at hand for the warm start and the
    health check.

    >>> from deqkit.zoo.deq_ddim.schedule import alpha_bars, ddim_steps
    >>> s = ddim_steps(alpha_bars("linear"), 4)
    >>> x_T = torch.ones(1, 3, dtype=torch.float64, requires_grad=True)
    >>> x0, z, sol = reconstruct(lambda x, t: 0.1 * x, x_T, s, InversionOptions("deq-implicit"))
    >>> x0.sum().backward(); x_T.grad.shape, z.shape
    (torch.Size([1, 3]), torch.Size([1, 4, 3]))
    """
    if options.method == "backprop":
        return ddim_chain(eps_model, x_T, steps), None, None
    n = len(steps)
    if init is None:
        init = x_T.detach().unsqueeze(1).expand(-1, n, *x_T.shape[1:]).contiguous()
    if options.method == "deq-implicit":
        backward = dk.Implicit(
            solver="fixed_point", tol=options.adjoint_tol, max_iter=options.adjoint_max_iter
        )
    else:
        backward = dk.Phantom(steps=options.phantom_steps, damping=options.phantom_damping)
    h = joint_map(eps_model, x_T, steps)
    solver = StateAnderson(m=options.m, lam=1e-3, n_states=n, criterion="per_state")
    sol = dk.solve(h, init, solver, tol=options.tol, max_iter=options.max_iter,
                   stop_mode="abs", on_failure="ignore")  # fmt: skip
    shape = sol.z.shape

    def h_flat(z: torch.Tensor) -> torch.Tensor:  # the backward strategies take (B, D)
        return h(z.view(shape)).flatten(1)

    z = backward.attach(h_flat, sol.z.flatten(1), sol, "ignore").view(shape)
    return z[:, -1], sol.z, sol


def _mse(x0: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (x0 - target).pow(2).flatten(1).mean(1)


def invert_model(
    eps_model: EpsModel,
    target: torch.Tensor,
    steps: DDIMSteps,
    options: InversionOptions = InversionOptions(),
    x_T: torch.Tensor | None = None,
    module: nn.Module | None = None,
) -> InversionRun:
    """Optimise x_T (default: zeros, the mean of the prior) so that DDIM(x_T) ≈ ``target``.

    The loss is the sum over images of their per-pixel MSE (images are independent). ``module``
    (the denoiser) is frozen meanwhile. Logged MSEs are those of sequential DDIM from the logged
    x_T, computed after the clock stops.

    >>> from deqkit.zoo.deq_ddim.schedule import alpha_bars, ddim_steps
    >>> s = ddim_steps(alpha_bars("linear"), 5)
    >>> eps = lambda x, t: 0.1 * x
    >>> target = ddim_sample(eps, torch.ones(1, 4), s)
    >>> run = invert_model(eps, target, s, InversionOptions("backprop", lr=0.1, iters=100))
    >>> run.mse[-1] < 1e-3 * run.mse[0]
    True
    """
    if any(s > 0 for s in steps.sigma.tolist()):
        raise ValueError("model inversion needs the deterministic sampler: build steps with eta=0")
    x = (torch.zeros_like(target) if x_T is None else x_T.detach().clone()).requires_grad_()
    opt = torch.optim.Adam([x], lr=options.lr)
    every = max(1, options.iters // options.log_points)
    # With a wall-time budget, log at equal time marks instead (the iteration count is unknown).
    mark = None if options.seconds is None else options.seconds / options.log_points
    next_mark = mark
    snapshots: list[tuple[int, float, torch.Tensor]] = [(0, 0.0, x.detach().clone())]
    init: torch.Tensor | None = None
    converged, rounds = [], []
    elapsed, clock = 0.0, CLOCKS[options.clock]
    with frozen(module):
        for it in range(1, options.iters + 1):
            start = clock()
            opt.zero_grad(set_to_none=True)
            x0, init, sol = reconstruct(eps_model, x, steps, options, init)
            _mse(x0, target).sum().backward()
            opt.step()
            elapsed += clock() - start
            if sol is not None:  # the per-state criterion at the returned states
                converged.append(sol.converged.float().mean().item())
                rounds.append(sol.nstep.float().mean().item())
            out_of_time = options.seconds is not None and elapsed >= options.seconds
            due = it % every == 0 if mark is None else elapsed >= next_mark
            if due or it == options.iters or out_of_time:
                snapshots.append((it, elapsed, x.detach().clone()))
                if mark is not None:
                    next_mark = (int(elapsed / mark) + 1) * mark
            if out_of_time:
                break
    run = InversionRun(x.detach())
    with torch.no_grad():
        for it, seconds, snap in snapshots:
            run.iters.append(it)
            run.seconds.append(seconds)
            run.mse.append(_mse(ddim_sample(eps_model, snap, steps), target).mean().item())
    if converged:
        run.converged = sum(converged) / len(converged)
        run.rounds = sum(rounds) / len(rounds)
    return run
