"""The training loop: seeded, resumable, DDP-aware, with a progress bar, JSONL and TensorBoard.

A run directory holds ``config.yaml`` (the resolved recipe), ``metrics.jsonl`` (one ``train``
record per step, one ``eval`` record per evaluation), TensorBoard event files, ``checkpoint.pt``
(the latest), ``best.pt`` (the best by the task's deciding metric), and at the end
``trace.json`` (residual vs iteration on test samples), ``pictures/`` (the task's images) and
``summary.json`` (covering the whole run, across resumes).

:func:`train` runs the phases in order: setup (:mod:`~deqkit.train.run`), then per step one
optimiser step (:func:`_train_step`, which also handles a non-finite step) followed by the
evaluation and checkpoint cadence (:func:`_after_step`), and at the end the final evaluation,
checkpoint and run files (:func:`_finish`). Checkpoint and resume are in
:mod:`~deqkit.train.resume`, the summary in :mod:`~deqkit.train.summary`.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import deqkit as dk

from .checkpoint import load_checkpoint
from .config import Config
from .distributed import DistEnv, replica_spread
from .errors import RunError
from .evaluate import evaluate, residual_trace
from .logging import strict_json
from .resume import last_good_checkpoint, save_run
from .run import Run, attach, setup_run
from .rundir import check_run_dir, save_pictures
from .step import NonFinite, run_step
from .summary import MEAN_KEYS, add_step, run_summary

__all__ = ["check_run_dir", "train"]


def train(
    cfg: Config,
    out_dir: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    env: DistEnv | None = None,
    stop_after: int | None = None,
) -> dict:
    """Train ``cfg`` through its task and write the run into ``out_dir``.

    Args:
        cfg: the resolved recipe.
        out_dir: run directory; must not hold another run unless ``resume`` or ``force``.
        resume: continue from ``out_dir/checkpoint.pt`` (model, optimiser, schedule, RNG, step,
            running totals), so the result equals an uninterrupted run. A finished run is left
            as it is (a no-op returning its summary).
        force: delete an existing run in ``out_dir`` and start over.
        progress: show a tqdm bar (rank 0 only).
        env: the process group position (from ``init_distributed``); one process if None.
        stop_after: end after this many steps without the final checkpoint (tests).

    Returns:
        The summary written to ``summary.json``; ``{}`` on ranks other than 0.
    """
    env = env or DistEnv()
    out = Path(out_dir)
    check_run_dir(out, resume, force)
    state = load_checkpoint(out / "checkpoint.pt") if resume else None
    run = setup_run(cfg, out, env, state)
    if run.finished:
        return _finished(run)
    attach(run, resume=resume, force=force)
    from tqdm import tqdm

    bar = tqdm(
        total=cfg.train.steps,
        initial=run.start,
        disable=not (progress and env.is_main),
        dynamic_ncols=True,
        desc=out.name or "train",
    )
    run.model.train()
    with warnings.catch_warnings():
        # Unconverged training solves are expected (tight budgets); they are logged per step.
        warnings.simplefilter("ignore", dk.DEQWarning)
        for step in range(run.start, cfg.train.steps):
            if stop_after is not None and step >= stop_after:
                _close(run, bar)
                return {}
            if _train_step(run, step, bar) is not None:
                _after_step(run, step + 1, bar)
    bar.close()
    return _finish(run)


def _finished(run: Run) -> dict:
    # --resume of a run that already reached its last step.
    summary_file = run.out / "summary.json"
    if run.env.is_main:
        print(f"[deqkit] {run.out} finished at step {run.start}; nothing to resume")
    return json.loads(summary_file.read_text()) if summary_file.is_file() else {}


def _close(run: Run, bar: Any) -> None:
    bar.close()
    if run.board is not None:
        run.board.close()


def _train_step(run: Run, step: int, bar: Any) -> dict | None:
    """Optimiser step ``step`` (0-based), logged; None when the step was skipped as non-finite."""
    cfg, env = run.cfg, run.env
    tic = time.perf_counter()
    # The mode follows from the step alone, so a resumed run picks the same one.
    pretraining = step < cfg.train.pretrain_steps
    run.layers.pretrain((cfg.train.pretrain_unroll or cfg.deq.max_iter) if pretraining else 0)
    done = step + 1
    try:
        record = run_step(cfg, run.parts, step, pretraining)
    except NonFinite as exc:
        _skip_or_stop(run, done, exc, bar)
        return None
    run.skipped_in_row = 0
    elapsed = time.perf_counter() - tic
    add_step(run.totals, record, elapsed, solved=not pretraining)
    if pretraining:
        record["pretrain"] = True
    if env.is_main:
        run.log.write(kind="train", step=done, time=elapsed, **record)
        if run.board is not None and (done % cfg.train.log_every == 0 or done == 1):
            run.board.scalars("train", done, record)
    if done % cfg.train.log_every == 0 or done == cfg.train.steps:
        bar.set_postfix_str(_postfix(record), refresh=False)
    bar.update(1)
    return record


def _skip_or_stop(run: Run, done: int, exc: NonFinite, bar: Any) -> None:
    """A non-finite step: counted, then the run stops (``train.on_nonfinite: stop``, or too
    many skips in a row) naming the last good checkpoint, or the batch is skipped and logged."""
    cfg = run.cfg
    run.totals["skipped"] += 1
    run.skipped_in_row += 1
    if cfg.train.on_nonfinite == "stop" or run.skipped_in_row > cfg.train.max_skips:
        _close(run, bar)
        last = last_good_checkpoint(run.checkpoint_path)
        why = "" if cfg.train.on_nonfinite == "stop" else " (too many in a row)"
        raise RunError(
            f"step {done}: non-finite training ({exc}){why}; run stopped. Last good "
            f"checkpoint: {last}. Lower optim.lr, or set train.on_nonfinite=skip"
        ) from None
    if run.env.is_main:
        run.log.write(kind="train", step=done, skipped=True, reason=str(exc))
    bar.update(1)


def _after_step(run: Run, done: int, bar: Any) -> None:
    """The evaluation and checkpoint cadence after ``done`` steps (the last step's evaluation
    and checkpoint are :func:`_finish`'s)."""
    cfg = run.cfg
    if cfg.train.eval_every and done % cfg.train.eval_every == 0 and done < cfg.train.steps:
        metrics, _ = _evaluate(run, done)
        if run.env.is_main:
            text = " ".join(f"{k} {metrics[k]:.4f}" for k in [run.task.best.metric, "loss"])
            bar.write(f"step {done}: {run.eval_split[1]} {text}")
        if run.best["step"] == done:
            save_run(run, done, run.out / "best.pt")
    if cfg.train.checkpoint_every and done % cfg.train.checkpoint_every == 0:
        save_run(run, done)


def _evaluate(run: Run, step: int) -> tuple[dict, dict]:
    """Evaluate on the run's evaluation split, keep the best, log it; (metrics, pictures)."""
    eval_set, eval_name = run.eval_split
    metrics, pictures = evaluate(
        run.model, run.task, eval_set, run.cfg.data.eval_batch_size, run.env,
        pictures=run.env.is_main,
    )  # fmt: skip
    value = metrics.get(run.task.best.metric)
    if value is not None and run.task.best.better(value, run.best["value"]):
        run.best.update(value=value, step=step)
    if run.env.is_main:
        run.log.write(kind="eval", step=step, split=eval_name, **metrics)
        if run.board is not None:
            run.board.scalars(eval_name, step, metrics)
            run.board.images(eval_name, step, pictures)
    return metrics, pictures


def _finish(run: Run) -> dict:
    """The final evaluation and checkpoint, the test metrics, then (rank 0) the run files."""
    cfg, env, out, model, task = run.cfg, run.env, run.out, run.model, run.task
    if run.warm is not None:
        run.warm.close()
    final_step = cfg.train.steps
    if cfg.train.pretrain_steps < final_step:
        run.layers.pretrain(0)
    test, pictures = _evaluate(run, final_step)
    if run.best["step"] == final_step:
        save_run(run, final_step, out / "best.pt")
    if not (cfg.train.checkpoint_every and final_step % cfg.train.checkpoint_every == 0):
        save_run(run, final_step)
    eval_name = run.eval_split[1]
    if eval_name != "test":
        test, _ = evaluate(model, task, run.data.test, cfg.data.eval_batch_size, env)
    # DDP keeps replicas equal by construction; checking costs two all-reduces and catches a
    # model whose buffers or unsynchronised state drift apart.
    spread = replica_spread(model, env)
    if not env.is_main:
        return {}
    if run.board is not None:
        if eval_name != "test":  # the final evaluation already logged the test split
            run.board.scalars("test", final_step, test)
        run.board.close()
    trace = residual_trace(model, task, run.data.test, env.device)
    (out / "trace.json").write_text(strict_json(trace))
    save_pictures(out, pictures)
    summary = run_summary(
        step=final_step,
        task=task,
        eval_name=eval_name,
        best=run.best,
        test=test,
        totals=run.totals,
        threads=torch.get_num_threads(),
        world_size=env.world,
        replica_max_diff=spread,
        checkpoint=str(run.checkpoint_path),
    )
    (out / "summary.json").write_text(strict_json(summary, indent=2))
    return json.loads(strict_json(summary))


_NOT_SHOWN = {"loss", "lr", "grad_norm", "jac_weight", "max_iter", "task", *MEAN_KEYS}


def _postfix(record: dict) -> str:
    """The progress bar's text for a step's record.

    >>> _postfix({"loss": 0.5, "acc": 0.75, "fwd_nstep": 7.0, "fwd_residual": 1e-3,
    ...           "fwd_converged": 0.9})
    'loss 0.500 acc 0.750 | fwd 7.0 it res 1.0e-03 90% conv'
    """
    keys = [k for k in record if k not in _NOT_SHOWN and isinstance(record[k], float)]
    text = " ".join(f"{k} {record[k]:.3f}" for k in ["loss", *keys[:3]])
    for side in ("fwd", "bwd"):
        if f"{side}_nstep" in record:
            nstep, res = record[f"{side}_nstep"], record[f"{side}_residual"]
            text += f" | {side} {nstep:.1f} it res {res:.1e}"
            if f"{side}_converged" in record:  # the convergence rate: share of samples within tol
                text += f" {record[f'{side}_converged']:.0%} conv"
    return text
