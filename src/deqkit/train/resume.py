"""Checkpoint and resume of a whole run: what a checkpoint holds (model, optimiser, schedule,
every rank's RNG, data state, step, running totals, best evaluation) and how a resumed run puts
it back, so that its result equals an uninterrupted run's.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .build import resume_scheduler, seed_everything
from .checkpoint import (
    FORMAT,
    capture_rng,
    load_checkpoint,
    load_model_state,
    restore_rng,
    save_checkpoint,
)
from .distributed import all_gather_objects

if TYPE_CHECKING:
    from .run import Run

__all__ = ["config_differences", "last_good_checkpoint", "restore_run", "save_run"]


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every leaf that differs between two nested recipe dicts.

    >>> config_differences({"optim": {"lr": 0.1}, "seed": 0}, {"optim": {"lr": 0.2}, "seed": 0})
    ['optim.lr: 0.1 -> 0.2']
    """
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def save_run(run: Run, step: int, path: Path | None = None) -> None:
    """Write the run's state after ``step`` steps to ``path`` (default ``checkpoint.pt``).

    Every rank takes part (their RNG states are gathered); rank 0 writes.
    """
    env = run.env
    rng = all_gather_objects(capture_rng(), env)
    if env.is_main:
        save_checkpoint(
            path or run.checkpoint_path,
            {
                "format": FORMAT,
                "step": step,
                "config": run.cfg.to_dict(),
                "model": run.model.state_dict(),
                "optimizer": run.optimizer.state_dict(),
                "scheduler": run.scheduler.state_dict(),
                "rng": rng,
                "data_state": run.data.state,
                "data_info": run.data.info,
                "totals": dict(run.totals),
                "best": dict(run.best),
                "threads": torch.get_num_threads(),
            },
        )
    env.barrier()


def restore_run(run: Run, state: dict) -> None:
    """Put a checkpoint's state back into a freshly built run (see :func:`save_run`).

    A changed config is allowed and printed. The RNG comes back per rank when the world size is
    the same, else every stream is reseeded from the seed, the step and the rank.
    """
    env, path = run.env, run.checkpoint_path
    diffs = config_differences(state["config"], run.cfg.to_dict())
    if diffs and env.is_main:
        print(f"[deqkit] resuming with a changed config: {'; '.join(diffs)}")
    load_model_state(run.model, state["model"], f"--resume: {path}")
    run.optimizer.load_state_dict(state["optimizer"])
    resume_scheduler(run.scheduler, state["scheduler"])
    rng = state.get("rng") or []
    if len(rng) == env.world:
        restore_rng(rng[env.rank])
    else:
        seed_everything(run.cfg.train.seed + 7919 * (state["step"] + 1) + env.rank)
    run.start = int(state["step"])
    run.totals.update(state.get("totals", {}))
    run.best.update(state.get("best", {}))


def last_good_checkpoint(path: Path) -> str:
    """Where a stopped run can be resumed from, for its error message.

    >>> last_good_checkpoint(Path("/nonexistent/checkpoint.pt"))
    'none written yet'
    """
    kept = load_checkpoint(path)["step"] if path.is_file() else None
    return f"{path} (step {kept})" if kept is not None else "none written yet"
