"""The whole-run summary (``summary.json``): the best evaluation, the final test metrics, timing,
and the solver statistics averaged over the steps that solved, from totals kept across resumes.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MEAN_KEYS", "add_step", "run_summary"]

#: Per-step solver statistics the summary averages (as ``mean_<key>``).
MEAN_KEYS = (
    "fwd_nstep",
    "fwd_residual",
    "fwd_converged",
    "bwd_nstep",
    "bwd_residual",
    "bwd_converged",
)


def add_step(totals: dict[str, Any], record: dict[str, Any], seconds: float, solved: bool) -> None:
    """Count one finished step into the run's ``totals``; solver statistics only from steps
    that solved (not unrolled pretraining).

    >>> totals = {"steps": 0, "time": 0.0, "solved_steps": 0}
    >>> add_step(totals, {"fwd_nstep": 4.0, "loss": 1.0}, 0.5, solved=True)
    >>> add_step(totals, {"fwd_nstep": 3.0}, 0.5, solved=False)
    >>> totals
    {'steps': 2, 'time': 1.0, 'solved_steps': 1, 'fwd_nstep': 4.0}
    """
    totals["steps"] += 1
    totals["time"] += seconds
    if solved:
        totals["solved_steps"] += 1
        for key in MEAN_KEYS:
            if key in record:
                totals[key] = totals.get(key, 0.0) + record[key]


def run_summary(
    *,
    step: int,
    task: Any,
    eval_name: str,
    best: dict[str, Any],
    test: dict[str, Any],
    totals: dict[str, Any],
    threads: int,
    world_size: int,
    replica_max_diff: float,
    checkpoint: str,
) -> dict[str, Any]:
    """The summary of a run that ended after ``step`` steps; ``test`` is the final test
    evaluation, ``best`` the best ``eval_name`` value of the task's deciding metric."""
    n = max(totals["steps"], 1)
    return {
        "step": step,
        "task": task.name,
        "best_metric": task.best.metric,
        "best_mode": task.best.mode,
        f"best_{eval_name}_{task.best.metric}": best["value"],
        "best_step": best["step"],
        **{f"test_{k}": v for k, v in test.items() if k != "n"},
        "test_n": test.get("n"),
        "train_seconds": totals["time"],
        "seconds_per_step": totals["time"] / n,
        "skipped_steps": totals["skipped"],
        "threads": threads,
        "world_size": world_size,
        "replica_max_diff": replica_max_diff,
        **{
            f"mean_{k}": totals[k] / totals["solved_steps"]
            for k in MEAN_KEYS
            if k in totals and totals["solved_steps"]
        },
        "checkpoint": checkpoint,
    }
