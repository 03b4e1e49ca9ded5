"""The training loop: seeded, resumable, DDP-aware, with a progress bar, JSONL and TensorBoard.

A run directory holds ``config.yaml`` (the resolved recipe), ``metrics.jsonl`` (one ``train``
record per step, one ``eval`` record per evaluation), TensorBoard event files, ``checkpoint.pt``
(the latest), ``best.pt`` (the best by the task's deciding metric), and at the end
``trace.json`` (residual vs iteration on test samples), ``pictures/`` (the task's images) and
``summary.json`` (covering the whole run, across resumes).
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

import deqkit as dk

from .board import Board
from .build import (
    build_model,
    build_optimizer,
    build_scheduler,
    build_task,
    prepare_data,
    resume_scheduler,
    seed_everything,
)
from .checkpoint import (
    FORMAT,
    capture_rng,
    load_checkpoint,
    load_model_state,
    restore_rng,
    save_checkpoint,
)
from .config import Config
from .distributed import DistEnv, all_gather_objects, replica_spread
from .errors import RunError
from .evaluate import evaluate, residual_trace
from .layers import DEQLayers, WarmStart
from .logging import MetricsLog, strict_json
from .step import NonFinite, StepParts, run_step

__all__ = ["check_run_dir", "train"]

_MEAN_KEYS = ("fwd_nstep", "fwd_residual", "fwd_converged", "bwd_nstep", "bwd_residual")


def check_run_dir(out: Path, resume: bool, force: bool) -> None:
    """Refuse a run directory that is a file, lies under a file, or holds another run.

    >>> import tempfile
    >>> run = Path(tempfile.mkdtemp())
    >>> check_run_dir(run, resume=False, force=False)    # empty: fine
    >>> _ = (run / "metrics.jsonl").write_text("")
    >>> check_run_dir(run, resume=False, force=False)
    Traceback (most recent call last):
    ...
    deqkit.train.errors.RunError: ... already holds a run (metrics.jsonl); use --resume to continue it, --force to start over (deletes it) or another --out
    """  # noqa: E501
    for parent in (out, *out.parents):
        if parent.exists() and not parent.is_dir():
            where = "is a file" if parent == out else f"lies under the file {parent}"
            raise RunError(f"--out {out} {where}; choose a directory")
    if resume:
        if not (out / "checkpoint.pt").is_file():
            raise RunError(f"--resume: {out / 'checkpoint.pt'} does not exist")
        return
    taken = [n for n in ("checkpoint.pt", "metrics.jsonl", "config.yaml") if (out / n).exists()]
    if taken and not force:
        raise RunError(
            f"{out} already holds a run ({', '.join(taken)}); use --resume to continue it, "
            "--force to start over (deletes it) or another --out"
        )


_RUN_FILES = (
    "checkpoint.pt",
    "best.pt",
    "metrics.jsonl",
    "config.yaml",
    "summary.json",
    "trace.json",
)


def _clear_run(out: Path) -> None:
    # Only what a run writes: --force on a directory that holds other files keeps them.
    for name in _RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for event in out.glob("events.out.tfevents.*"):
        event.unlink()
    if (out / "pictures").is_dir():
        shutil.rmtree(out / "pictures")


def _config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


_NOT_SHOWN = {"loss", "lr", "grad_norm", "jac_weight", "max_iter", "task", *_MEAN_KEYS}


def _postfix(record: dict) -> str:
    keys = [k for k in record if k not in _NOT_SHOWN and isinstance(record[k], float)]
    text = " ".join(f"{k} {record[k]:.3f}" for k in ["loss", *keys[:3]])
    if "fwd_nstep" in record:
        text += f" | fwd {record['fwd_nstep']:.1f} it res {record['fwd_residual']:.1e}"
    if "bwd_nstep" in record:
        text += f" | bwd {record['bwd_nstep']:.1f} it res {record['bwd_residual']:.1e}"
    return text


def _save_pictures(out: Path, pictures: dict[str, Any]) -> None:
    if not pictures:
        return
    import matplotlib.pyplot as plt
    import numpy as np

    folder = out / "pictures"
    folder.mkdir(exist_ok=True)
    for name, image in pictures.items():
        plt.imsave(folder / f"{name}.png", np.clip(np.asarray(image, dtype=float), 0.0, 1.0))


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
    ckpt_path = out / "checkpoint.pt"
    state = load_checkpoint(ckpt_path) if resume else None
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed = cfg.train.seed
    seed_everything(seed)
    # Everything the recipe can get wrong is built before the run directory is touched.
    data = prepare_data(cfg, state.get("data_state") if state is not None else None)
    model = build_model(cfg, data.info).to(env.device)
    task = build_task(cfg, data.info)
    optimizer = build_optimizer(cfg.optim, model)
    scheduler = build_scheduler(cfg.optim, optimizer, cfg.train.steps)
    start, totals = 0, {"steps": 0, "time": 0.0, "solved_steps": 0, "skipped": 0}
    best: dict[str, Any] = {"value": None, "step": None}
    if state is not None:
        diffs = _config_differences(state["config"], cfg.to_dict())
        if diffs and env.is_main:
            print(f"[deqkit] resuming with a changed config: {'; '.join(diffs)}")
        load_model_state(model, state["model"], f"--resume: {ckpt_path}")
        optimizer.load_state_dict(state["optimizer"])
        resume_scheduler(scheduler, state["scheduler"])
        rng = state.get("rng") or []
        if len(rng) == env.world:
            restore_rng(rng[env.rank])
        else:
            seed_everything(seed + 7919 * (state["step"] + 1) + env.rank)
        start = int(state["step"])
        totals.update(state.get("totals", {}))
        best.update(state.get("best", {}))
        if start >= cfg.train.steps:
            summary_file = out / "summary.json"
            if env.is_main:
                print(f"[deqkit] {out} finished at step {start}; nothing to resume")
            return json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    elif env.distributed:
        # Model init is identical on all ranks; the dropout streams must not be.
        torch.manual_seed(seed + 104729 * env.rank)
    layers = DEQLayers(model)
    if cfg.train.compile:
        layers.compile()
    warm = WarmStart(layers.layers[0], len(data.train)) if cfg.train.warm_start and layers else None
    unroll = cfg.train.pretrain_unroll or cfg.deq.max_iter
    log = MetricsLog(out / "metrics.jsonl")
    board = None
    if env.is_main:
        if force and not resume:
            _clear_run(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(_yaml(cfg.to_dict()))
        if resume:
            log.truncate_after(start)
        if cfg.train.tensorboard:
            board = Board(out, purge_step=start + 1 if resume else None)
    net: nn.Module = model
    if env.distributed:
        ids = [env.device.index] if env.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    scaler = None
    if cfg.train.precision == "fp16":
        scaler = torch.amp.GradScaler(env.device.type)
    parts = StepParts(model, net, task, data.train, optimizer, scheduler, layers, env, warm, scaler)
    eval_set, eval_name = (data.val, "val") if data.val is not None else (data.test, "test")

    def checkpoint(step: int, path: Path = ckpt_path) -> None:
        rng = all_gather_objects(capture_rng(), env)
        if env.is_main:
            save_checkpoint(
                path,
                {
                    "format": FORMAT,
                    "step": step,
                    "config": cfg.to_dict(),
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": rng,
                    "data_state": data.state,
                    "data_info": data.info,
                    "totals": dict(totals),
                    "best": dict(best),
                    "threads": torch.get_num_threads(),
                },
            )
        env.barrier()

    def run_eval(step: int) -> dict:
        metrics, pictures = evaluate(
            model, task, eval_set, cfg.data.eval_batch_size, env, pictures=env.is_main
        )
        value = metrics.get(task.best.metric)
        if value is not None and task.best.better(value, best["value"]):
            best.update(value=value, step=step)
        if env.is_main:
            log.write(kind="eval", step=step, split=eval_name, **metrics)
            if board is not None:
                board.scalars(eval_name, step, metrics)
                board.images(eval_name, step, pictures)
        return {**metrics, "_pictures": pictures}

    from tqdm import tqdm

    bar = tqdm(
        total=cfg.train.steps,
        initial=start,
        disable=not (progress and env.is_main),
        dynamic_ncols=True,
        desc=out.name or "train",
    )
    skipped_in_row = 0
    model.train()
    with warnings.catch_warnings():
        # Unconverged training solves are expected (tight budgets); they are logged per step.
        warnings.simplefilter("ignore", dk.DEQWarning)
        for step in range(start, cfg.train.steps):
            if stop_after is not None and step >= stop_after:
                bar.close()
                if board is not None:
                    board.close()
                return {}
            tic = time.perf_counter()
            # The mode follows from the step alone, so a resumed run picks the same one.
            pretraining = step < cfg.train.pretrain_steps
            layers.pretrain(unroll if pretraining else 0)
            done = step + 1
            try:
                record = run_step(cfg, parts, step, pretraining)
            except NonFinite as exc:
                totals["skipped"] += 1
                skipped_in_row += 1
                if cfg.train.on_nonfinite == "stop" or skipped_in_row > cfg.train.max_skips:
                    bar.close()
                    if board is not None:
                        board.close()
                    kept = load_checkpoint(ckpt_path)["step"] if ckpt_path.is_file() else None
                    last = f"{ckpt_path} (step {kept})" if kept is not None else "none written yet"
                    why = "" if cfg.train.on_nonfinite == "stop" else " (too many in a row)"
                    raise RunError(
                        f"step {done}: non-finite training ({exc}){why}; run stopped. Last good "
                        f"checkpoint: {last}. Lower optim.lr, or set train.on_nonfinite=skip"
                    ) from None
                if env.is_main:
                    log.write(kind="train", step=done, skipped=True, reason=str(exc))
                bar.update(1)
                continue
            skipped_in_row = 0
            elapsed = time.perf_counter() - tic
            totals["steps"] += 1
            totals["time"] += elapsed
            if not pretraining:  # solver statistics average over the steps that solved
                totals["solved_steps"] += 1
                for key in _MEAN_KEYS:
                    if key in record:
                        totals[key] = totals.get(key, 0.0) + record[key]
            if pretraining:
                record["pretrain"] = True
            if env.is_main:
                log.write(kind="train", step=done, time=elapsed, **record)
                if board is not None and (done % cfg.train.log_every == 0 or done == 1):
                    board.scalars("train", done, record)
            if done % cfg.train.log_every == 0 or done == cfg.train.steps:
                bar.set_postfix_str(_postfix(record), refresh=False)
            bar.update(1)
            if cfg.train.eval_every and done % cfg.train.eval_every == 0 and done < cfg.train.steps:
                metrics = run_eval(done)
                if env.is_main:
                    text = " ".join(f"{k} {metrics[k]:.4f}" for k in [task.best.metric, "loss"])
                    bar.write(f"step {done}: {eval_name} {text}")
                if best["step"] == done:
                    checkpoint(done, out / "best.pt")
            if cfg.train.checkpoint_every and done % cfg.train.checkpoint_every == 0:
                checkpoint(done)
    bar.close()
    if warm is not None:
        warm.close()
    final_step = cfg.train.steps
    if cfg.train.pretrain_steps < final_step:
        layers.pretrain(0)
    final = run_eval(final_step)
    if best["step"] == final_step:
        checkpoint(final_step, out / "best.pt")
    if not (cfg.train.checkpoint_every and final_step % cfg.train.checkpoint_every == 0):
        checkpoint(final_step)
    pictures = final.pop("_pictures")
    test = final
    if eval_name != "test":
        test, _ = evaluate(model, task, data.test, cfg.data.eval_batch_size, env)
    # DDP keeps replicas equal by construction; checking costs two all-reduces and catches a
    # model whose buffers or unsynchronised state drift apart.
    spread = replica_spread(model, env)
    if not env.is_main:
        return {}
    if board is not None:
        if eval_name != "test":  # the final evaluation already logged the test split
            board.scalars("test", final_step, test)
        board.close()
    trace = residual_trace(model, task, data.test, env.device)
    (out / "trace.json").write_text(strict_json(trace))
    _save_pictures(out, pictures)
    n = max(totals["steps"], 1)
    summary = {
        "step": final_step,
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
        "threads": torch.get_num_threads(),
        "world_size": env.world,
        "replica_max_diff": spread,
        **{
            f"mean_{k}": totals[k] / totals["solved_steps"]
            for k in _MEAN_KEYS
            if k in totals and totals["solved_steps"]
        },
        "checkpoint": str(ckpt_path),
    }
    (out / "summary.json").write_text(strict_json(summary, indent=2))
    return json.loads(strict_json(summary))


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)
