"""Measurements of a trained DEQ's health: a solver × budget sweep through the task's own
metrics, the spectral radius of J_f at z*, and the adjoint solve at the training settings.

The model is any module whose DEQ layers are ``dk.DEQ`` modules and whose task returns
``(output, solution)`` (every zoo model, or one built in Python). The layers' settings are
changed only inside :func:`layer_settings` and restored after.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

import deqkit as dk

from ..solvers import SOLVERS
from ..train.evaluate import evaluate, to_device
from ..train.layers import DEQLayers
from ..train.task import Task

__all__ = ["DiagnoseOptions", "adjoint_check", "layer_settings", "spectral_check", "sweep"]


@dataclass(frozen=True)
class DiagnoseOptions:
    """What :func:`deqkit.diagnose.diagnose` measures.

    Args:
        solvers: forward solvers to sweep (names of ``deqkit.solvers.SOLVERS``); the model's own
            solver keeps its options, another starts from its defaults.
        max_iter: iteration budgets to sweep.
        factor: the budget "at convergence" is ``factor`` × the model's eval budget.
        batch_size: evaluation batch size.
        max_samples: evaluate the first ``max_samples`` samples only (None: the whole split).
        probe_samples: samples (the first batch, at most ``max_samples``) for the spectral
            radius and the adjoint solve.
        rho_iter: power-iteration steps of ``dk.spectral_radius``.
        seed: seed of the power iteration's start vectors.

    >>> DiagnoseOptions(solvers=("anderson",), max_iter=(4, 8)).factor
    4
    >>> DiagnoseOptions(solvers=("newton",))
    Traceback (most recent call last):
    ...
    ValueError: unknown solver 'newton' in solvers; choose from ['anderson', 'broyden', 'fixed_point', 'newton_krylov']
    """  # noqa: E501

    solvers: tuple[str, ...] = ("anderson", "broyden")
    max_iter: tuple[int, ...] = (4, 8, 16, 32, 64)
    factor: int = 4
    batch_size: int = 128
    max_samples: int | None = None
    probe_samples: int = 64
    rho_iter: int = 50
    seed: int = 0

    def __post_init__(self):
        for name in self.solvers:
            if name not in SOLVERS:
                raise ValueError(
                    f"unknown solver {name!r} in solvers; choose from {sorted(SOLVERS)}"
                )
        for value in self.max_iter:
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"max_iter budgets must be integers >= 1, got {value!r}")
        for key in ("factor", "batch_size", "probe_samples", "rho_iter"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < (2 if key == "rho_iter" else 1):
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if self.max_samples is not None and (
            not isinstance(self.max_samples, int) or self.max_samples < 1
        ):
            raise ValueError(f"max_samples must be None or >= 1, got {self.max_samples!r}")


class _Head:
    """The first ``n`` samples of a dataset (same ``batch`` interface)."""

    def __init__(self, dataset: Any, n: int | None):
        self.dataset, self.n = dataset, len(dataset) if n is None else min(n, len(dataset))

    def __len__(self) -> int:
        return self.n

    def batch(self, index, generator=None):
        return self.dataset.batch(index)


@contextlib.contextmanager
def layer_settings(
    layers: DEQLayers, solver: str | None = None, budget: int | None = None
) -> Iterator[None]:
    """Every DEQ layer solved with ``solver`` (None: its own, with its options; a layer that
    already uses it keeps its options) in at most ``budget`` iterations (None: its own; in
    training and eval mode alike) inside the block, through the public
    ``DEQ.solving_with`` and ``DEQ.budget``.

    >>> deq = dk.DEQ(lambda z, x: 0.5 * z + x, max_iter=10, on_failure="ignore")
    >>> with layer_settings(DEQLayers(deq), "fixed_point", 2):
    ...     _, sol = deq(torch.ones(1, 1))
    >>> int(sol.nstep[0]), deq.max_iter, deq.solver.name
    (2, 10, 'anderson')
    """
    with contextlib.ExitStack() as stack:
        for layer in layers.layers:
            if solver is not None and layer.solver.name != solver:
                stack.enter_context(layer.solving_with(solver))
            if budget is not None:
                stack.enter_context(layer.budget(budget, eval_max_iter=budget))
        yield


def sweep(
    model: nn.Module,
    task: Task,
    dataset: Any,
    options: DiagnoseOptions,
    points: list[tuple[str | None, int]],
) -> list[dict]:
    """One row per ``(solver, budget)``: the task's metrics, ``loss`` and the forward statistics
    (``fwd_converged``: share of samples within the layer's tolerance) over ``dataset``."""
    layers, data = DEQLayers(model), _Head(dataset, options.max_samples)
    rows = []
    for solver, budget in points:
        start = time.perf_counter()
        with layer_settings(layers, solver, budget):
            metrics, _ = evaluate(model, task, data, options.batch_size)
        name = solver or layers.layers[0].solver.name
        rows.append(
            {"solver": name, "max_iter": budget, **metrics, "seconds": time.perf_counter() - start}
        )
    return rows


def _probe_batch(task: Task, dataset: Any, options: DiagnoseOptions) -> tuple[Any, Any]:
    index = torch.arange(min(options.probe_samples, len(_Head(dataset, options.max_samples))))
    return task.split(to_device(dataset.batch(index), torch.device("cpu")))


class _Capture:
    """The first call of a DEQ layer: its inputs and its returned (z, sol)."""

    def __init__(self, layer: dk.DEQ):
        self.call: tuple | None = None
        self.hook = layer.register_forward_hook(self._seen, with_kwargs=True)

    def _seen(self, module, args, kwargs, output):
        if self.call is None:
            self.call = (args, {k: v for k, v in kwargs.items() if k != "z0"}, output)

    def close(self):
        self.hook.remove()


def _summary(values: list[float]) -> dict[str, float | None]:
    finite = sorted(v for v in values if math.isfinite(v))
    if not finite:
        return {"mean": None, "median": None, "p90": None, "max": None}
    q = lambda p: finite[min(len(finite) - 1, int(p * (len(finite) - 1) + 0.5))]  # noqa: E731
    return {"mean": sum(finite) / len(finite), "median": q(0.5), "p90": q(0.9), "max": finite[-1]}


@torch.no_grad()
def spectral_check(
    model: nn.Module, task: Task, dataset: Any, options: DiagnoseOptions, budget: int
) -> dict:
    """Per-sample spectral radius ρ(J_f) at z* of the first DEQ layer (solved with its own
    solver in ``budget`` iterations) on the first ``options.probe_samples`` samples.

    Dim 0 of the state must index independent samples; ρ < 1 means plain fixed-point
    iteration contracts locally around z*.
    """
    start = time.perf_counter()
    layers = DEQLayers(model)
    layer = layers.layers[0]
    inputs, _ = _probe_batch(task, dataset, options)
    capture = _Capture(layer)
    was_training = model.training
    model.eval()
    try:
        with layer_settings(layers, None, budget), warnings.catch_warnings():
            warnings.simplefilter("ignore", dk.DEQWarning)
            task.forward(model, inputs)
        if capture.call is None:
            return {}
        (x, *rest), kwargs, (z, sol) = capture.call
        z_star = pytree.tree_map(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, z)
        generator = torch.Generator(device=sol.converged.device).manual_seed(options.seed)
        rho = dk.spectral_radius(
            lambda state: layer.cell(state, x, *rest, **kwargs),
            z_star,
            n_iter=options.rho_iter,
            generator=generator,
        )
    finally:
        capture.close()
        model.train(was_training)
    values = [float(r) for r in rho.double().cpu()]
    converged = sol.converged.cpu().tolist()
    return {
        "n": len(values),
        "max_iter": budget,
        "below_1": sum(v < 1 for v in values) / max(1, len(values)),
        **_summary(values),
        "converged_share": sum(bool(c) for c in converged) / max(1, len(converged)),
        "rho_iter": options.rho_iter,
        "seconds": time.perf_counter() - start,
        "per_sample": values,
    }


def adjoint_check(
    model: nn.Module, task: Task, dataset: Any, options: DiagnoseOptions, budget: int
) -> dict:
    """The implicit backward's adjoint solve at the training settings (the layer's own
    solver, forward budget ``budget``, its backward options) on the first probe samples, in
    eval mode; parameter gradients are put back as they were."""
    start = time.perf_counter()
    layers = DEQLayers(model)
    inputs, targets = _probe_batch(task, dataset, options)
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.grad for p in params]
    was_training = model.training
    model.eval()
    try:
        for p in params:
            p.grad = None
        with layer_settings(layers, None, budget), warnings.catch_warnings():
            warnings.simplefilter("ignore", dk.DEQWarning)
            with torch.enable_grad():
                output, sol = task.forward(model, inputs)
                loss = task.criterion(task.final(output), targets)
                if loss.requires_grad:
                    loss.backward()
    finally:
        for p, g in zip(params, saved, strict=True):
            p.grad = g
        model.train(was_training)
    backward = str(layers.layers[0].backward)
    adj = None if sol is None else sol.backward
    if adj is None:
        return {"backward": backward, "implicit": False}
    # A model that aggregates several solves (one per time step) may report only the steps
    # and residuals of its adjoints: judge those against the backward's own tolerance.
    tol = getattr(adj, "tol", getattr(layers.layers[0].backward, "tol", None))
    converged = getattr(adj, "converged", None)
    if converged is None:
        converged = adj.residual <= (tol if tol is not None else 0.0)
    return {
        "backward": backward,
        "implicit": True,
        "n": int(converged.numel()),
        "converged": converged.float().mean().item(),
        "nstep": adj.nstep.float().mean().item(),
        "residual": adj.residual.float().mean().item(),
        "tol": tol,
        "stop_mode": getattr(adj, "stop_mode", None),
        "seconds": time.perf_counter() - start,
    }
