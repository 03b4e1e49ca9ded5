"""Evaluation: accuracy and solver statistics on a set, a residual trace, checkpoint scoring."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

import deqkit as dk

from ..data import ImageSet, Preprocess, eval_batches
from .build import build_model, prepare_data
from .checkpoint import load_checkpoint
from .config import Config, apply_overrides
from .distributed import DistEnv, all_reduce_sum, pick_device

__all__ = ["deq_layers", "evaluate", "evaluate_checkpoint", "residual_trace", "solution_stats"]


def deq_layers(model: nn.Module) -> list[dk.DEQ]:
    return [m for m in model.modules() if isinstance(m, dk.DEQ)]


def solution_stats(sol: dk.Solution | None) -> dict[str, float]:
    """Batch means of the forward (and, once backward ran, adjoint) solver statistics."""
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
    return stats


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: ImageSet,
    prep: Preprocess,
    batch_size: int,
    env: DistEnv | None = None,
) -> dict[str, float]:
    """Loss, accuracy and mean forward solver steps/residual over ``images`` (all ranks' shares).

    Returns a dict with ``loss``, ``acc``, ``n`` (examples scored) and, for a model with a DEQ
    layer, ``fwd_nstep``, ``fwd_residual`` and ``fwd_converged``.
    """
    env = env or DistEnv()
    was_training = model.training
    model.eval()
    sums = torch.zeros(6, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dk.DEQWarning)
        for index in eval_batches(len(images), batch_size, env.rank, env.world):
            x, y = images.batch(index)
            x, y = prep(x).to(env.device), y.to(env.device)
            logits, sol = model(x)
            loss = nn.functional.cross_entropy(logits, y, reduction="sum")
            n = len(y)
            sums += torch.tensor(
                [
                    loss.item(),
                    (logits.argmax(1) == y).sum().item(),
                    n,
                    sol.nstep.float().sum().item() if sol is not None else 0.0,
                    sol.residual.float().sum().item() if sol is not None else 0.0,
                    sol.converged.float().sum().item() if sol is not None else 0.0,
                ],
                dtype=torch.float64,
            )
    model.train(was_training)
    loss, correct, n, nstep, res, conv = all_reduce_sum(sums, env).tolist()
    n = max(n, 1.0)
    metrics = {"loss": loss / n, "acc": correct / n, "n": int(n)}
    if deq_layers(model):
        metrics.update(fwd_nstep=nstep / n, fwd_residual=res / n, fwd_converged=conv / n)
    return metrics


@torch.no_grad()
def residual_trace(
    model: nn.Module,
    images: ImageSet,
    prep: Preprocess,
    batch_size: int,
    device=None,
    max_samples: int = 64,
) -> dict:
    """Per-iteration forward residuals of the first evaluation batch (at most ``max_samples``).

    Returns ``{"trace": [[...] per sample], "tol", "stop_mode", "nstep"}``, or ``{}`` when the
    model has no DEQ layer. Iterations past a sample's stop repeat its last residual.
    """
    layers = deq_layers(model)
    if not layers:
        return {}
    index = next(iter(eval_batches(len(images), min(batch_size, max_samples))))
    x, _ = images.batch(index)
    x = prep(x)
    if device is not None:
        x = x.to(device)
    was_training = model.training
    model.eval()
    saved = [layer.trace for layer in layers]
    try:
        for layer in layers:
            layer.trace = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dk.DEQWarning)
            _, sol = model(x)
    finally:
        for layer, old in zip(layers, saved, strict=True):
            layer.trace = old
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
    and score it on ``split`` ("test", "val" or "train").

    Returns :func:`evaluate`'s dict plus ``step`` and the ``deq`` settings used.
    """
    state = load_checkpoint(path)
    cfg = Config.from_dict(apply_overrides(state["config"], _eval_overrides(list(overrides))))
    data = prepare_data(cfg.data, cfg.train.seed, preprocess=state.get("preprocess"))
    sets = {"test": data.test, "val": data.val, "train": data.train}
    if split not in sets or sets[split] is None:
        valid = [k for k, v in sets.items() if v is not None]
        raise ValueError(f"split must be one of {valid}, got {split!r}")
    env = DistEnv(device=pick_device(cfg.train.device))
    model = build_model(cfg, data.info).to(env.device)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise ValueError(
            f"checkpoint {path} does not fit the model built from its config with overrides "
            f"{list(overrides)}: {str(exc).splitlines()[0]}"
        ) from None
    metrics = evaluate(model, sets[split], data.preprocess, cfg.data.eval_batch_size, env)
    eval_budget = cfg.deq.eval_max_iter or cfg.deq.max_iter
    return {"split": split, "step": state["step"], "max_iter": eval_budget, **metrics}
