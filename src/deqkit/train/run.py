"""A training run's setup: what it builds from the recipe (data, model, task, optimiser, schedule),
what it restores on ``--resume``, and what it attaches before the first step (the DEQ layers'
handles, warm starts, the run directory's files, DDP, the fp16 scaler).

The order is part of the result: the RNG is seeded before the data and the model are built, so
a run and its resumption build the same objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import DataSplits
from .board import Board
from .build import (
    build_model,
    build_optimizer,
    build_scheduler,
    build_task,
    prepare_data,
    seed_everything,
)
from .config import Config
from .distributed import DistEnv
from .layers import DEQLayers, WarmStart
from .logging import MetricsLog
from .resume import restore_run
from .rundir import clear_run, write_config
from .step import StepParts
from .task import Task

__all__ = ["Run", "attach", "setup_run"]


def _totals() -> dict[str, Any]:
    return {"steps": 0, "time": 0.0, "solved_steps": 0, "skipped": 0}


@dataclass
class Run:
    """Everything one training run holds.

    :func:`setup_run` fills the first block and the progress (``start``: steps already done;
    ``totals``: running sums over the whole run, across resumes; ``best``: the best evaluation
    so far); :func:`attach` fills the rest.
    """

    cfg: Config
    out: Path
    env: DistEnv
    data: DataSplits
    model: nn.Module
    task: Task
    optimizer: torch.optim.Optimizer
    scheduler: Any
    start: int = 0
    totals: dict[str, Any] = field(default_factory=_totals)
    best: dict[str, Any] = field(default_factory=lambda: {"value": None, "step": None})
    skipped_in_row: int = 0
    layers: DEQLayers | None = None
    warm: WarmStart | None = None
    log: MetricsLog | None = None
    board: Board | None = None
    parts: StepParts | None = None

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    @property
    def eval_split(self) -> tuple[Any, str]:
        """The set evaluated during training and its name: validation if held out, else test."""
        if self.data.val is not None:
            return self.data.val, "val"
        return self.data.test, "test"

    @property
    def finished(self) -> bool:
        return self.start >= self.cfg.train.steps


def setup_run(cfg: Config, out: Path, env: DistEnv, state: dict | None) -> Run:
    """Build the run's parts from ``cfg`` and, when resuming, restore ``state`` into them.

    Everything the recipe can get wrong is built here, before the run directory is touched.
    """
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    data = prepare_data(cfg, state.get("data_state") if state is not None else None)
    model = build_model(cfg, data.info).to(env.device)
    task = build_task(cfg, data.info)
    optimizer = build_optimizer(cfg.optim, model)
    scheduler = build_scheduler(cfg.optim, optimizer, cfg.train.steps)
    run = Run(cfg, out, env, data, model, task, optimizer, scheduler)
    if state is not None:
        restore_run(run, state)
    elif env.distributed:
        # Model init is identical on all ranks; the dropout streams must not be.
        torch.manual_seed(cfg.train.seed + 104729 * env.rank)
    return run


def attach(run: Run, *, resume: bool, force: bool) -> None:
    """Prepare ``run`` for its first step: DEQ layer handles (compiled cells, warm starts), the
    run directory (cleared for ``force``, ``config.yaml``, the metrics log cut back to the
    resumed step, TensorBoard), the DDP wrapper and the fp16 gradient scaler."""
    cfg, env, out = run.cfg, run.env, run.out
    run.layers = layers = DEQLayers(run.model)
    if cfg.train.compile:
        layers.compile()
    if cfg.train.warm_start and layers:
        run.warm = WarmStart(layers.layers[0], len(run.data.train))
    run.log = MetricsLog(out / "metrics.jsonl")
    if env.is_main:
        if force and not resume:
            clear_run(out)
        out.mkdir(parents=True, exist_ok=True)
        write_config(out, cfg.to_dict())
        if resume:
            run.log.truncate_after(run.start)
        if cfg.train.tensorboard:
            run.board = Board(out, purge_step=run.start + 1 if resume else None)
    net: nn.Module = run.model
    if env.distributed:
        ids = [env.device.index] if env.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(run.model, device_ids=ids)
    scaler = torch.amp.GradScaler(env.device.type) if cfg.train.precision == "fp16" else None
    run.parts = StepParts(
        run.model,
        net,
        run.task,
        run.data.train,
        run.optimizer,
        run.scheduler,
        layers,
        env,
        run.warm,
        scaler,
    )
