"""``diagnose``: is a trained DEQ a real equilibrium? The function behind ``deqkit diagnose``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..core import check_compatible
from ..train.layers import DEQLayers
from ..train.task import Task
from .measure import DiagnoseOptions, adjoint_check, spectral_check, sweep
from .verdict import metric_noise, verdict

__all__ = ["check_options", "diagnose", "diagnose_checkpoint"]


def diagnose(
    model: nn.Module, task: Task, dataset: Any, options: DiagnoseOptions | None = None
) -> dict:
    """Health report of ``model`` (with ``dk.DEQ`` layers) on ``dataset`` through ``task``.

    Returns a JSON-ready dict: ``tol``, ``stop_mode``, ``solver``, ``train_max_iter`` and
    ``eval_max_iter`` of the first layer; ``sweep`` (one row per solver × budget: the task's
    metrics, ``loss``, ``fwd_converged`` (share of samples within ``tol``), ``fwd_nstep``,
    ``fwd_residual``); ``at_train_budget``, ``at_budget`` and ``at_convergence`` (the layer's
    own solver at its training budget, at its eval budget and at ``factor`` × the eval budget);
    ``gap`` (eval budget) and ``train_gap`` (training budget) of the deciding metric against
    convergence; ``spectral_radius`` of J_f at z*; ``adjoint`` (the backward solve at the
    training budget); and ``verdict``. The training-budget rows are measured in eval mode on
    ``dataset`` (the trainer logs the same rates on the training batches).

    >>> import torch, deqkit as dk
    >>> from deqkit.train.task import Classification
    >>> class Blobs:
    ...     def __len__(self): return 8
    ...     def batch(self, index, generator=None):
    ...         return torch.eye(4)[index % 4], index % 4
    >>> class Model(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.deq = dk.DEQ(lambda z, x: 0.5 * torch.tanh(z) + x, tol=1e-4, max_iter=30)
    ...     def forward(self, x):
    ...         z, sol = self.deq(x)
    ...         return 3 * z, sol
    >>> options = DiagnoseOptions(solvers=("fixed_point",), max_iter=(2, 30))
    >>> report = diagnose(Model(), Classification({"num_classes": 4}), Blobs(), options)
    >>> [(r["max_iter"], r["fwd_converged"]) for r in report["sweep"]]
    [(2, 0.0), (30, 1.0)]
    >>> report["verdict"]["status"], round(report["spectral_radius"]["max"], 3)
    ('healthy', 0.5)
    """
    options = options or DiagnoseOptions()
    layers = DEQLayers(model)
    if not layers:
        raise ValueError(
            f"diagnose needs a model with a dk.DEQ layer; {type(model).__name__} has none"
        )
    check_options(layers, options)
    first = layers.layers[0]
    train_budget = first.max_iter
    eval_budget = first.eval_max_iter or first.max_iter
    reference = options.factor * eval_budget
    points = [(s, k) for s in options.solvers for k in options.max_iter]
    rows = sweep(model, task, dataset, options, points)
    budgets = list(dict.fromkeys((train_budget, eval_budget, reference)))
    own_rows = sweep(model, task, dataset, options, [(None, k) for k in budgets])
    own = dict(zip(budgets, own_rows, strict=True))
    at_train, at_budget, at_conv = own[train_budget], own[eval_budget], own[reference]
    metric = task.best.metric
    noise = metric_noise(at_conv.get(metric), int(at_conv["n"]), task.best.mode)
    report = {
        "tol": first.tol,
        "stop_mode": first.stop_mode,
        "solver": first.solver.name,
        "train_max_iter": train_budget,
        "eval_max_iter": eval_budget,
        "metric": metric,
        "mode": task.best.mode,
        "n": int(at_conv["n"]),
        "sweep": rows,
        "at_train_budget": at_train,
        "at_budget": at_budget,
        "at_convergence": at_conv,
        "gap": _gap(metric, at_budget, at_conv, noise),
        "train_gap": _gap(metric, at_train, at_conv, noise),
        "spectral_radius": spectral_check(model, task, dataset, options, reference),
        "adjoint": adjoint_check(model, task, dataset, options, train_budget),
    }
    report["verdict"] = verdict(report)
    return report


def check_options(layers: DEQLayers, options: DiagnoseOptions) -> None:
    """Refuse, before any solve, a swept budget below a layer's ``n_states`` or a swept solver
    its backward cannot work with (``ValueError``, one line)."""
    for layer in layers.layers:
        small = [k for k in options.max_iter if k < layer.n_states]
        if small:
            raise ValueError(
                f"--max-iter {small[0]} is below the model's deq.n_states={layer.n_states} "
                f"(each solve returns that many states); use budgets >= {layer.n_states}"
            )
        for name in options.solvers:
            if name != layer.solver.name:
                try:
                    check_compatible(name, layer.backward)
                except ValueError as exc:
                    raise ValueError(f"--solvers {name}: {exc}") from None


def _gap(metric: str, low: dict, high: dict, noise: float | None) -> dict:
    """The deciding metric at a budget (``low``) against at convergence (``high``)."""
    a, b = low.get(metric), high.get(metric)
    gap = {"metric": metric, "at_budget": a, "at_convergence": b, "difference": None}
    if isinstance(a, float) and isinstance(b, float):
        gap["difference"] = a - b
    return {**gap, "max_iter": low["max_iter"], "noise": noise}


def diagnose_checkpoint(
    path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    split: str = "test",
    options: DiagnoseOptions | None = None,
) -> dict:
    """:func:`diagnose` of the model stored in a training checkpoint (or run directory), on its
    recipe's ``split`` with its task; ``overrides`` are ``key=value`` recipe overrides.
    The report adds ``checkpoint``, ``split`` and ``step``."""
    from ..train.build import build_model, build_task, prepare_data
    from ..train.checkpoint import load_checkpoint, load_model_state
    from ..train.errors import ConfigError
    from ..train.recipe import apply_overrides, parse

    if split not in ("test", "val", "train"):
        raise ConfigError(f"--split must be one of ['test', 'val', 'train'], got {split!r}")
    state = load_checkpoint(path)
    cfg = parse(apply_overrides(state["config"], list(overrides)))
    data = prepare_data(cfg, state.get("data_state"))
    dataset = {"test": data.test, "val": data.val, "train": data.train}[split]
    if dataset is None:
        raise ConfigError(f"--split {split}: this run has no such split")
    model = build_model(cfg, data.info)
    load_model_state(model, state["model"], f"checkpoint {path}")
    task = build_task(cfg, data.info)
    if options is None:
        options = DiagnoseOptions(batch_size=cfg.data.eval_batch_size)
    layers = DEQLayers(model)
    if not layers:
        raise ConfigError(_no_deq_layer(cfg.model["name"], type(model).__name__, path))
    try:
        check_options(layers, options)
    except ValueError as exc:
        raise ConfigError(f"deqkit diagnose: {exc}") from None
    report = diagnose(model, task, dataset, options)
    return {"checkpoint": str(path), "split": split, "step": state["step"], **report}


def _no_deq_layer(model_name: str, class_name: str, path: str | Path) -> str:
    """One line for a checkpoint whose model has no ``dk.DEQ`` layer, naming the zoo package's
    own health check when it has one (its ``DIAGNOSE_COMMAND``, e.g. DEQ-DDIM's sampler)."""
    import importlib

    from ..zoo import MODELS

    command = None
    if model_name in MODELS:
        command = getattr(importlib.import_module(MODELS[model_name]), "DIAGNOSE_COMMAND", None)
    message = f"deqkit diagnose: model {model_name!r} ({class_name}) has no dk.DEQ layer"
    if command:
        return f"{message}; its health check is `{command} {path}`"
    return f"{message}; there is no equilibrium to diagnose"
