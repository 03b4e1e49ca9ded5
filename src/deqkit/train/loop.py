"""The training loop: seeded, resumable, DDP-aware, with a progress bar and JSONL metrics.

A run directory holds ``config.yaml`` (the resolved recipe), ``metrics.jsonl`` (one ``train``
record per step, one ``eval`` record per evaluation), ``checkpoint.pt`` (the latest), and at the
end ``trace.json`` (residual vs iteration for one evaluation batch) and ``summary.json``.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import torch
from torch import nn

import deqkit as dk

from ..data import seeded_generator, train_batch_indices
from .build import (
    build_model,
    build_optimizer,
    build_scheduler,
    prepare_data,
    preprocess_state,
    resume_scheduler,
    seed_everything,
)
from .checkpoint import FORMAT, capture_rng, load_checkpoint, restore_rng, save_checkpoint
from .config import Config
from .distributed import DistEnv, all_gather_objects, all_reduce_sum, replica_spread
from .evaluate import deq_layers, evaluate, residual_trace, solution_stats
from .logging import MetricsLog

__all__ = ["train"]

# Per-step quantities summed over ranks: loss*n, correct, n, then solver stats times n.
_STEP_KEYS = ("fwd_nstep", "fwd_residual", "fwd_converged", "bwd_nstep", "bwd_residual")


def _write_yaml(path: Path, data: dict) -> None:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def _step_record(loss, logits, y, sol, env: DistEnv) -> dict[str, float]:
    n = len(y)
    stats = solution_stats(sol)
    has_bwd = "bwd_nstep" in stats
    values = [loss.item() * n, (logits.argmax(1) == y).sum().item(), n, float(has_bwd) * n]
    values += [stats.get(k, 0.0) * n for k in _STEP_KEYS]
    total = all_reduce_sum(torch.tensor(values, dtype=torch.float64), env).tolist()
    n_all = total[2]
    record = {"loss": total[0] / n_all, "acc": total[1] / n_all}
    if sol is not None:
        for key, value in zip(_STEP_KEYS, total[4:], strict=True):
            if key.startswith("bwd"):
                if total[3] > 0:
                    record[key] = value / total[3]
            else:
                record[key] = value / n_all
    return record


def _postfix(record: dict) -> str:
    text = f"loss {record['loss']:.3f} acc {record['acc']:.3f}"
    if "fwd_nstep" in record:
        text += f" | fwd {record['fwd_nstep']:.1f} it res {record['fwd_residual']:.1e}"
    if "bwd_nstep" in record:
        text += f" | bwd {record['bwd_nstep']:.1f} it res {record['bwd_residual']:.1e}"
    return text


def train(
    cfg: Config,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    env: DistEnv | None = None,
    stop_after: int | None = None,
) -> dict:
    """Train ``cfg`` and write the run into ``out_dir``.

    Args:
        cfg: the resolved recipe.
        out_dir: run directory (created).
        resume: continue from ``out_dir/checkpoint.pt`` (model, optimiser, schedule, RNG, step),
            so the result equals an uninterrupted run.
        progress: show a tqdm bar (rank 0 only).
        env: the process group position (from :func:`init_distributed`); one process if None.
        stop_after: end after this many steps without the final checkpoint (simulates a killed
            run in tests).

    Returns:
        The summary dict also written to ``summary.json`` (final evaluation, timings, means of
        the solver statistics over training); ``{}`` on ranks other than 0.
    """
    env = env or DistEnv()
    out = Path(out_dir)
    ckpt_path = out / "checkpoint.pt"
    state = None
    if resume:
        state = load_checkpoint(ckpt_path)
        diffs = _config_differences(state["config"], cfg.to_dict())
        if diffs and env.is_main:
            print(f"[deqkit] resuming with a changed config: {'; '.join(diffs)}")
    seed = cfg.train.seed
    seed_everything(seed)
    data = prepare_data(
        cfg.data, seed, preprocess=state.get("preprocess") if state is not None else None
    )
    model = build_model(cfg, data.info).to(env.device)
    optimizer = build_optimizer(cfg.optim, model)
    scheduler = build_scheduler(cfg.optim, optimizer, cfg.train.steps)
    start = 0
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError) as exc:
            raise ValueError(
                f"--resume: {ckpt_path} holds a different model than this recipe builds "
                f"({str(exc).splitlines()[0]}); use another --out or the original recipe"
            ) from None
        resume_scheduler(scheduler, state["scheduler"])
        rng = state.get("rng") or []
        if len(rng) == env.world:
            restore_rng(rng[env.rank])
        else:
            seed_everything(seed + 7919 * (state["step"] + 1) + env.rank)
        start = int(state["step"])
    elif env.distributed:
        # Model init is identical on all ranks; the dropout streams must not be.
        torch.manual_seed(seed + 104729 * env.rank)
    layers = deq_layers(model)
    unroll = cfg.train.pretrain_unroll or cfg.deq.max_iter
    log = MetricsLog(out / "metrics.jsonl")
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        _write_yaml(out / "config.yaml", cfg.to_dict())
        if resume:
            log.truncate_after(start)
        elif log.path.exists():
            log.path.unlink()
    net: nn.Module = model
    if env.distributed:
        ids = [env.device.index] if env.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    eval_set = data.val if data.val is not None else data.test
    eval_name = "val" if data.val is not None else "test"

    def checkpoint(step: int) -> None:
        rng = all_gather_objects(capture_rng(), env)
        if env.is_main:
            save_checkpoint(
                ckpt_path,
                {
                    "format": FORMAT,
                    "step": step,
                    "config": cfg.to_dict(),
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": rng,
                    "preprocess": preprocess_state(data.preprocess),
                    "data_info": data.info,
                },
            )
        env.barrier()

    def run_eval(step: int) -> dict:
        metrics = evaluate(model, eval_set, data.preprocess, cfg.data.eval_batch_size, env)
        if env.is_main:
            log.write(kind="eval", step=step, split=eval_name, **metrics)
        return metrics

    from tqdm import tqdm

    bar = tqdm(
        total=cfg.train.steps,
        initial=start,
        disable=not (progress and env.is_main),
        dynamic_ncols=True,
        desc=out.name or "train",
    )
    totals = {"steps": 0, "time": 0.0}
    model.train()
    with warnings.catch_warnings():
        # Unconverged training solves are expected (tight budgets); they are logged per step.
        warnings.simplefilter("ignore", dk.DEQWarning)
        for step in range(start, cfg.train.steps):
            if stop_after is not None and step >= stop_after:
                bar.close()
                return {}
            tic = time.perf_counter()
            # The mode follows from the step alone, so a resumed run picks the same one.
            pretraining = step < cfg.train.pretrain_steps
            for layer in layers:
                layer.pretrain(unroll if pretraining else 0)
            index = train_batch_indices(
                len(data.train), cfg.data.batch_size, step, seed, env.rank, env.world
            )
            x, y = data.train.batch(index)
            aug = seeded_generator(seed, step, env.rank) if cfg.data.augment else None
            x, y = data.preprocess(x, aug).to(env.device), y.to(env.device)
            logits, sol = net(x)
            loss = nn.functional.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            record = _step_record(loss.detach(), logits.detach(), y, sol, env)
            elapsed = time.perf_counter() - tic
            totals["steps"] += 1
            totals["time"] += elapsed
            if not pretraining:  # solver statistics average over the steps that solved
                totals["solved_steps"] = totals.get("solved_steps", 0) + 1
                for key in _STEP_KEYS:
                    if key in record:
                        totals[key] = totals.get(key, 0.0) + record[key]
            done = step + 1
            if pretraining:
                record["pretrain"] = True
            if env.is_main:
                log.write(kind="train", step=done, lr=lr, time=elapsed, **record)
            if done % cfg.train.log_every == 0 or done == cfg.train.steps:
                bar.set_postfix_str(_postfix(record), refresh=False)
            bar.update(1)
            if cfg.train.eval_every and done % cfg.train.eval_every == 0 and done < cfg.train.steps:
                metrics = run_eval(done)
                if env.is_main:
                    bar.write(f"step {done}: {eval_name} acc {metrics['acc']:.4f}")
            if cfg.train.checkpoint_every and done % cfg.train.checkpoint_every == 0:
                checkpoint(done)
    bar.close()
    final_step = cfg.train.steps
    if cfg.train.pretrain_steps < final_step:
        for layer in layers:
            layer.pretrain(0)
    if start < final_step and not (
        cfg.train.checkpoint_every and final_step % cfg.train.checkpoint_every == 0
    ):
        checkpoint(final_step)
    final = run_eval(final_step)
    test = (
        final
        if eval_name == "test"
        else evaluate(model, data.test, data.preprocess, cfg.data.eval_batch_size, env)
    )
    # DDP keeps replicas equal by construction; checking costs two all-reduces and catches a
    # model whose buffers or unsynchronised state drift apart.
    spread = replica_spread(model, env)
    if not env.is_main:
        return {}
    trace = residual_trace(model, data.test, data.preprocess, cfg.data.eval_batch_size, env.device)
    (out / "trace.json").write_text(json.dumps(trace))
    n = max(totals["steps"], 1)
    summary = {
        "step": final_step,
        "test_acc": test["acc"],
        "test_loss": test["loss"],
        **({"test_fwd_nstep": test["fwd_nstep"]} if "fwd_nstep" in test else {}),
        "train_seconds": totals["time"],
        "seconds_per_step": totals["time"] / n,
        "world_size": env.world,
        "replica_max_diff": spread,
        **{f"mean_{k}": totals[k] / totals["solved_steps"] for k in _STEP_KEYS if k in totals},
        "checkpoint": str(ckpt_path),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
