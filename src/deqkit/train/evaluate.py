"""Evaluation through the task: its metrics, the mean loss and the solver statistics on a set
(every rank's share, reduced by torchmetrics), a residual trace, scoring a checkpoint.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchmetrics import MeanMetric

import deqkit as dk

from ..data import eval_batches
from .distributed import DistEnv, pick_device
from .layers import DEQLayers
from .task import Task

__all__ = ["evaluate", "evaluate_checkpoint", "residual_trace", "solution_stats", "to_device"]


def to_device(tree: Any, device: torch.device) -> Any:
    """Every tensor inside tuples/lists/dicts moved to ``device`` (other leaves unchanged).

    >>> to_device({"x": torch.ones(1), "n": 3}, torch.device("cpu"))
    {'x': tensor([1.]), 'n': 3}
    """
    if isinstance(tree, torch.Tensor):
        return tree.to(device)
    if isinstance(tree, dict):
        return {k: to_device(v, device) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        return type(tree)(to_device(v, device) for v in tree)
    return tree


def solution_stats(sol: Any) -> dict[str, float]:
    """Batch means of the forward (and, once backward ran, adjoint) solver statistics.

    ``fwd_converged`` / ``bwd_converged`` are the convergence rates: the share of samples whose
    solve reached its tolerance (the adjoint's only when its statistics say per sample).

    >>> import deqkit as dk
    >>> a = torch.tensor([[0.1], [0.99]], requires_grad=True)  # sample 1 converges slowly
    >>> z, sol = dk.fixed_point(lambda z: a * z + 1.0, torch.zeros(2, 1), "fixed_point",
    ...                         tol=1e-6, max_iter=20, on_failure="ignore")
    >>> solution_stats(sol)["fwd_converged"], solution_stats(None)
    (0.5, {})
    >>> z.sum().backward(); sorted(solution_stats(sol))
    ['bwd_converged', 'bwd_nstep', 'bwd_residual', 'fwd_converged', 'fwd_nstep', 'fwd_residual']
    """
    if sol is None:
        return {}
    stats = {
        "fwd_nstep": sol.nstep.float().mean().item(),
        "fwd_residual": sol.residual.float().mean().item(),
        "fwd_converged": sol.converged.float().mean().item(),
    }
    if sol.backward is not None:
        stats["bwd_nstep"] = sol.backward.nstep.float().mean().item()
        stats["bwd_residual"] = sol.backward.residual.float().mean().item()
        # A model's aggregated adjoint statistics may carry only steps and residuals.
        converged = getattr(sol.backward, "converged", None)
        if converged is not None:
            stats["bwd_converged"] = converged.float().mean().item()
    return stats


@torch.no_grad()
def evaluate(
    model: nn.Module,
    task: Task,
    dataset: Any,
    batch_size: int,
    env: DistEnv | None = None,
    pictures: bool = False,
) -> tuple[dict[str, float], dict[str, Any]]:
    """The task's metrics, ``loss``, ``n`` and the forward solver statistics over ``dataset``.

    Returns ``(metrics, pictures)``: pictures of the first batch when asked (rank 0).

    >>> from deqkit.train.task import Classification
    >>> class Pairs:
    ...     def __len__(self): return 4
    ...     def batch(self, index, generator=None):
    ...         return torch.eye(2)[index % 2], index % 2
    >>> class Model(nn.Module):
    ...     def forward(self, x): return 5 * x, None       # logits; no DEQ layer
    >>> metrics, _ = evaluate(Model(), Classification({"num_classes": 2}), Pairs(), 3)
    >>> metrics["acc"], metrics["n"]
    (1.0, 4)
    """
    env = env or DistEnv()
    was_training = model.training
    model.eval()
    metrics = {k: m.to(env.device) for k, m in task.metrics().items()}
    means = {k: MeanMetric().to(env.device) for k in ("loss", "fwd_nstep", "fwd_residual")}
    means["fwd_converged"] = MeanMetric().to(env.device)
    count, shown = 0, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dk.DEQWarning)
        for index in eval_batches(len(dataset), batch_size, env.rank, env.world):
            inputs, targets = task.split(to_device(dataset.batch(index), env.device))
            output, sol = task.forward(model, inputs)
            n = task.count(inputs, targets)
            count += n
            means["loss"].update(task.criterion(task.final(output), targets), weight=n)
            task.update(metrics, output, targets)
            if sol is not None:
                for key, value in solution_stats(sol).items():
                    if key in means:
                        means[key].update(value, weight=len(sol.nstep))
            if pictures and not shown and env.is_main:
                shown = task.pictures(inputs, targets, output)
    model.train(was_training)
    result = {k: float(m.compute()) for k, m in metrics.items()}
    result["loss"] = float(means["loss"].compute())
    n_all = torch.tensor([float(count)])
    if env.distributed:
        from .distributed import all_reduce_sum

        n_all = all_reduce_sum(n_all, env)
    result["n"] = int(n_all.item())
    if DEQLayers(model):
        for key in ("fwd_nstep", "fwd_residual", "fwd_converged"):
            result[key] = float(means[key].compute())
    if env.is_main:
        result.update(task.model_metrics(model, dataset))
    return result, shown


@torch.no_grad()
def residual_trace(
    model: nn.Module, task: Task, dataset: Any, device=None, max_samples: int = 64
) -> dict:
    """Per-iteration forward residuals of the first ``max_samples`` samples of ``dataset``.

    Returns ``{"trace": [[...] per sample], "tol", "stop_mode", "nstep"}``, or ``{}`` when the
    model has no DEQ layer. Iterations past a sample's stop repeat its last residual.
    """
    layers = DEQLayers(model)
    if not layers:
        return {}
    index = next(iter(eval_batches(len(dataset), max_samples)))
    inputs, _ = task.split(to_device(dataset.batch(index), device or torch.device("cpu")))
    was_training = model.training
    model.eval()
    try:
        with layers.tracing(), warnings.catch_warnings():
            warnings.simplefilter("ignore", dk.DEQWarning)
            _, sol = task.forward(model, inputs)
    finally:
        model.train(was_training)
    if sol is None or sol.trace is None:
        return {}
    return {
        "trace": sol.trace.double().cpu().tolist(),
        "nstep": sol.nstep.cpu().tolist(),
        "tol": sol.tol,
        "stop_mode": sol.stop_mode,
    }


def _eval_overrides(overrides: list[str]) -> list[str]:
    # "deq.max_iter=K" at eval time means "cap the eval solver at K": the layer is in eval mode,
    # where deq.eval_max_iter takes precedence, so cap that too unless it is set explicitly.
    keys = {item.partition("=")[0].strip() for item in overrides}
    extra = []
    if "deq.max_iter" in keys and "deq.eval_max_iter" not in keys:
        value = [o for o in overrides if o.partition("=")[0].strip() == "deq.max_iter"][-1]
        extra.append("deq.eval_max_iter=" + value.partition("=")[2])
    return list(overrides) + extra


def evaluate_checkpoint(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), split: str = "test"
) -> dict:
    """Rebuild the model stored in a checkpoint (its own resolved config, plus ``overrides``)
    and score it on ``split`` ("test", "val" or "train") with its task.

    Returns the metrics of :func:`evaluate` plus ``split``, ``step``, ``task``, ``best`` (the
    deciding metric) and ``max_iter`` (the eval budget).
    """
    from .build import build_model, build_task, prepare_data
    from .checkpoint import load_checkpoint, load_model_state
    from .errors import ConfigError
    from .recipe import apply_overrides, parse

    state = load_checkpoint(path)
    trained = parse(state["config"])
    cfg = parse(apply_overrides(state["config"], _eval_overrides(list(overrides))))
    if split not in ("test", "val", "train"):
        raise ConfigError(f"--split must be one of ['test', 'val', 'train'], got {split!r}")
    if split == "val" and cfg.data.val_fraction != trained.data.val_fraction:
        raise ConfigError(
            f"--split val with data.val_fraction={cfg.data.val_fraction} but the run was trained "
            f"with {trained.data.val_fraction}: those 'val' samples were (partly) trained on"
        )
    data = prepare_data(cfg, state.get("data_state"))
    sets = {"test": data.test, "val": data.val, "train": data.train}
    if sets[split] is None:
        raise ConfigError(
            "--split val: this run has no validation split (trained with data.val_fraction=0)"
        )
    env = DistEnv(device=pick_device(cfg.train.device))
    model = build_model(cfg, data.info).to(env.device)
    load_model_state(model, state["model"], f"checkpoint {path}")
    task = build_task(cfg, data.info)
    metrics, _ = evaluate(model, task, sets[split], cfg.data.eval_batch_size, env)
    eval_budget = cfg.deq.eval_max_iter or cfg.deq.max_iter
    return {
        "split": split,
        "step": state["step"],
        "task": task.name,
        "best": task.best.metric,
        "max_iter": eval_budget,
        **metrics,
    }
