"""One optimiser step through the task: batch, forward (autocast, budget, warm start), loss with
the DEQ terms, backward, clipping, update, and the step's record reduced over ranks.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import deqkit as dk

from ..data import seeded_generator, train_batch_indices
from .config import Config
from .distributed import DistEnv, all_reduce_sum
from .evaluate import solution_stats, to_device
from .layers import DEQLayers, WarmStart
from .task import DEQTerms, Task

__all__ = ["NonFinite", "StepParts", "autocast", "run_step"]

_SOLVER_KEYS = (
    "fwd_nstep",
    "fwd_residual",
    "fwd_converged",
    "bwd_nstep",
    "bwd_residual",
    "bwd_converged",
)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class NonFinite(Exception):
    """The step's loss or gradient is NaN/Inf, or the solver diverged (internal signal)."""


@dataclass
class StepParts:
    """What a step needs besides the config: model (possibly DDP-wrapped), task, data, ..."""

    model: nn.Module
    net: nn.Module
    task: Task
    train_set: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    layers: DEQLayers
    env: DistEnv
    warm: WarmStart | None = None
    scaler: Any = None


def autocast(cfg: Config, device: torch.device):
    """The recipe's mixed-precision context (``train.precision``) for ``device``.

    >>> from deqkit.train.recipe import parse
    >>> cfg = parse({"model": {"name": "mdeq"}, "train": {"precision": "bf16"}})
    >>> with autocast(cfg, torch.device("cpu")):
    ...     print((torch.ones(2, 2) @ torch.ones(2, 2)).dtype)
    torch.bfloat16
    """
    if cfg.train.precision == "fp32":
        return contextlib.nullcontext()
    if cfg.train.precision == "fp16" and device.type != "cuda":
        raise ValueError("train.precision 'fp16' needs a CUDA device; use 'bf16' on CPU")
    return torch.autocast(device.type, dtype=_DTYPES[cfg.train.precision])


def _indices(dataset: Any, cfg: Config, step: int, env: DistEnv) -> torch.Tensor:
    args = (cfg.data.batch_size, step, cfg.train.seed, env.rank, env.world)
    if hasattr(dataset, "train_indices"):
        return dataset.train_indices(*args)
    return train_batch_indices(len(dataset), *args)


def _budget(cfg: Config, step: int) -> int | None:
    delta = cfg.train.budget_delta
    if not delta:
        return None
    # Drawn from (seed, step) alone: every rank and a resumed run draw the same budget.
    gen = seeded_generator(cfg.train.seed, step, 7)
    return max(1, cfg.deq.max_iter + int(torch.randint(-delta, delta + 1, (), generator=gen)))


def _failed(sol: Any) -> bool:
    if sol is None:
        return False
    status = int(sol.status)
    return status in (int(dk.Status.DIVERGED), int(dk.Status.NONFINITE))


def run_step(cfg: Config, parts: StepParts, step: int, pretraining: bool) -> dict[str, Any]:
    """Train on batch ``step`` (0-based); returns the record logged for it.

    Raises :class:`NonFinite` before the parameters change when the loss, the gradient norm
    or the solve is not finite (the caller stops or skips).
    """
    env, task = parts.env, parts.task
    index = _indices(parts.train_set, cfg, step, env)
    batch = parts.train_set.batch(index, seeded_generator(cfg.train.seed, step, env.rank))
    inputs, targets = task.split(to_device(batch, env.device))
    if parts.warm is not None:
        parts.warm.index = index
    budget = None if pretraining else _budget(cfg, step)
    terms = DEQTerms(cfg.loss.jac_at(step), cfg.loss.skip_weight, cfg.loss.fpc_gamma)
    limit = parts.layers.budget(budget) if budget else contextlib.nullcontext()
    with limit, autocast(cfg, env.device):
        output, sol = task.forward(parts.net, inputs)
        loss = task.loss(output, targets, sol, terms)
    total = loss.total.float()
    parts.optimizer.zero_grad(set_to_none=True)
    bad = not bool(torch.isfinite(total.detach())) or _failed(sol)
    # Every rank must take the same branch, or the others would wait in the all-reduce.
    if env.distributed:
        bad = all_reduce_sum(torch.tensor([float(bad)]), env).item() > 0
    if bad:
        status = f", solver status {dk.Status(int(sol.status)).name}" if sol is not None else ""
        raise NonFinite(f"loss {total.item():.4g}{status}")
    if parts.scaler is not None:
        parts.scaler.scale(total).backward()
        parts.scaler.unscale_(parts.optimizer)
    else:
        total.backward()
    clip = cfg.optim.grad_clip if cfg.optim.grad_clip is not None else math.inf
    params = [p for p in parts.model.parameters() if p.grad is not None]
    grad_norm = nn.utils.clip_grad_norm_(params, clip) if params else torch.zeros(())
    if not torch.isfinite(grad_norm):
        parts.optimizer.zero_grad(set_to_none=True)
        raise NonFinite(f"gradient norm {grad_norm.item():.4g}")
    if parts.scaler is not None:
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
    else:
        parts.optimizer.step()
    lr = parts.optimizer.param_groups[0]["lr"]
    parts.scheduler.step()
    record = _reduce(task, inputs, targets, output, loss, sol, env)
    record.update(lr=lr, grad_norm=float(grad_norm))
    if terms.jac_weight or "jac" in record:
        record["jac_weight"] = terms.jac_weight
    if budget is not None:
        record["max_iter"] = budget
    return record


def _reduce(task, inputs, targets, output, loss, sol, env: DistEnv) -> dict[str, float]:
    n = task.count(inputs, targets)
    with torch.no_grad():
        values = {"loss": loss.total.detach().float().item()}
        values.update({k: v.detach().float().item() for k, v in loss.terms.items()})
        values.update(task.step_metrics(output, targets))
    stats = solution_stats(sol)
    keys = sorted(values)
    flat = [n] + [values[k] * n for k in keys]
    # Each solver statistic as (weighted sum, weight): a statistic only some samples have (the
    # adjoint's before backward ran, or on no rank) averages over those that have it.
    for key in _SOLVER_KEYS:
        flat += [stats.get(key, 0.0) * n, float(key in stats) * n]
    total = all_reduce_sum(torch.tensor(flat, dtype=torch.float64), env).tolist()
    n_all = total[0]
    record = {k: v / n_all for k, v in zip(keys, total[1 : 1 + len(keys)], strict=True)}
    sums = total[1 + len(keys) :]
    for i, key in enumerate(_SOLVER_KEYS):
        if sums[2 * i + 1] > 0:
            record[key] = sums[2 * i] / sums[2 * i + 1]
    return record
