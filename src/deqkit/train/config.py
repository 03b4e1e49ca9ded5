"""The recipe schema: typed sections, each a frozen dataclass that OmegaConf merges a recipe into.

A recipe has the keys ``description`` (one line), ``model`` (``name`` plus the model's own
options, checked by its builder), ``task`` (optional: ``name`` plus task options; default the
model's ``TASK``), and the typed sections ``deq``, ``data``, ``optim``, ``loss`` and ``train``.
Unknown keys are rejected with the valid ones; numbers must be finite. Loading and ``--set``
overrides live in :mod:`deqkit.train.recipe`.

>>> Config.from_dict({"model": {"name": "mdeq"}, "train": {"steps": 5}}).train.steps
5
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..backward import BACKWARDS
from ..core import DEFAULTS, FAILURE_POLICIES, STOP_MODES, STOP_SCOPES, check_compatible
from ..solvers import SOLVERS
from ._checks import build_options, check_choice, check_field, check_number, set_field
from .errors import ConfigError

__all__ = [
    "SECTIONS",
    "TOP_LEVEL",
    "Config",
    "DEQConfig",
    "DataConfig",
    "LossConfig",
    "OptimConfig",
    "TrainConfig",
    "deq_kwargs",
]


@dataclass(frozen=True)
class DEQConfig:
    """How the DEQ layer solves. Omitted keys take the core's defaults (``deqkit`` itself).

    >>> DEQConfig(solver="broyden").max_iter == DEFAULTS["max_iter"]
    True
    """

    solver: str = DEFAULTS["solver"]
    solver_options: dict = field(default_factory=dict)
    backward: str = DEFAULTS["backward"]
    backward_options: dict = field(default_factory=dict)
    tol: float = DEFAULTS["tol"]
    max_iter: int = DEFAULTS["max_iter"]
    eval_max_iter: int | None = None
    stop_mode: str = DEFAULTS["stop_mode"]
    stop_scope: str = DEFAULTS["stop_scope"]
    on_failure: str = DEFAULTS["on_failure"]
    n_states: int = 1
    jac_reg_prob: float = 0.0
    jac_reg_vecs: int = 1

    def __post_init__(self):
        check_choice("deq.on_failure", self.on_failure, FAILURE_POLICIES)
        check_choice("deq.solver", self.solver, SOLVERS)
        check_choice("deq.backward", self.backward, BACKWARDS)
        check_choice("deq.stop_mode", self.stop_mode, STOP_MODES)
        check_choice("deq.stop_scope", self.stop_scope, STOP_SCOPES)
        try:
            check_compatible(self.solver, self.backward)
        except ValueError as exc:
            raise ConfigError(f"deq: {exc}") from None
        check_field(self, "deq.tol", float, 0.0, strict=True)
        check_field(self, "deq.max_iter", int, 1)
        if self.eval_max_iter is not None:
            check_field(self, "deq.eval_max_iter", int, 1)
        check_field(self, "deq.n_states", int, 1)
        check_field(self, "deq.jac_reg_prob", float, 0.0, maximum=1.0)
        check_field(self, "deq.jac_reg_vecs", int, 1)
        deq_kwargs(self)  # builds the solver and backward objects once, so errors surface now


def deq_kwargs(cfg: DEQConfig) -> dict:
    """Keyword arguments for ``dk.DEQ`` from a recipe's ``deq`` section.

    >>> kw = deq_kwargs(DEQConfig(solver_options={"m": 3}, max_iter=10))
    >>> kw["solver"], kw["max_iter"]
    (Anderson(m=3, lam=0.0001, damping=1.0), 10)
    """
    solver = build_options(
        f"deq.solver_options ({cfg.solver})", SOLVERS[cfg.solver], cfg.solver_options
    )
    backward = build_options(
        f"deq.backward_options ({cfg.backward})", BACKWARDS[cfg.backward], cfg.backward_options
    )
    kwargs = {
        "solver": solver,
        "backward": backward,
        "tol": cfg.tol,
        "max_iter": cfg.max_iter,
        "eval_max_iter": cfg.eval_max_iter,
        "stop_mode": cfg.stop_mode,
        "on_failure": cfg.on_failure,
    }
    # Only when used, so a model whose DEQ call does not take them is not forced to.
    if cfg.n_states > 1:
        kwargs["n_states"] = cfg.n_states
    if cfg.stop_scope != DEFAULTS["stop_scope"]:
        kwargs["stop_scope"] = cfg.stop_scope
    if cfg.jac_reg_prob > 0:
        kwargs.update(jac_reg_prob=cfg.jac_reg_prob, jac_reg_vecs=cfg.jac_reg_vecs)
    return kwargs


@dataclass(frozen=True)
class DataConfig:
    """The keys every dataset has; the dataset's own keys go to its options class.

    ``batch_size`` is the global batch (split over processes); ``eval_batch_size`` defaults to
    four times it; ``root`` is a local data folder; ``val_fraction`` holds out that share of
    the training set for periodic evaluation.

    >>> DataConfig(name="mnist", batch_size=128).eval_batch_size
    512
    """

    name: str = "digits"
    batch_size: int = 64
    eval_batch_size: int | None = None
    root: str | None = None
    val_fraction: float = 0.0

    def __post_init__(self):
        from ..data import data_source

        try:
            data_source(self.name)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"data.name: {exc}") from None
        check_field(self, "data.batch_size", int, 1)
        if self.eval_batch_size is None:
            set_field(self, "eval_batch_size", 4 * self.batch_size)
        check_field(self, "data.eval_batch_size", int, 1)
        if self.root is not None and not isinstance(self.root, str):
            raise ConfigError(f"data.root must be a path string or null, got {self.root!r}")
        if check_field(self, "data.val_fraction", float, 0.0) >= 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction!r}")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser, learning-rate schedule (linear warmup, then cosine or constant), clipping.

    >>> OptimConfig(name="sgd", lr=0.1).momentum
    0.9
    """

    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    scheduler: str = "cosine"
    warmup_steps: int = 0
    grad_clip: float | None = 1.0

    def __post_init__(self):
        check_choice("optim.name", self.name, ("adam", "adamw", "sgd"))
        check_choice("optim.scheduler", self.scheduler, ("cosine", "constant"))
        check_field(self, "optim.lr", float, 0.0, strict=True)
        check_field(self, "optim.weight_decay", float, 0.0)
        check_field(self, "optim.momentum", float, 0.0)
        check_field(self, "optim.warmup_steps", int, 0)
        if self.grad_clip is not None:
            clip = check_number("optim.grad_clip", self.grad_clip, float, 0.0)
            set_field(self, "grad_clip", clip if clip > 0 else None)


@dataclass(frozen=True)
class LossConfig:
    """Weights of the DEQ training terms (the task adds them to its loss).

    ``jac_weight`` multiplies the Jacobian penalty (drawn with probability ``deq.jac_reg_prob``
    per step, ``deq.jac_reg_vecs`` probes); it rises by ``jac_weight_step`` every
    ``jac_weight_every`` steps (0: constant), capped at ``jac_weight_max``, as the JR paper's
    schedule does. ``skip_weight`` multiplies the Skip-DEQ initialiser loss; ``fpc_gamma`` is the
    fixed-point correction decay (with ``deq.n_states`` > 1).

    >>> LossConfig(jac_weight=1.0, jac_weight_step=0.5, jac_weight_every=10).jac_at(25)
    2.0
    """

    jac_weight: float = 0.0
    jac_weight_step: float = 0.0
    jac_weight_every: int = 0
    jac_weight_max: float | None = None
    skip_weight: float = 0.0
    fpc_gamma: float = 0.8

    def __post_init__(self):
        for key in ("jac_weight", "jac_weight_step", "skip_weight"):
            check_field(self, f"loss.{key}", float, 0.0)
        check_field(self, "loss.jac_weight_every", int, 0)
        if self.jac_weight_max is not None:
            check_field(self, "loss.jac_weight_max", float, 0)
        check_field(self, "loss.fpc_gamma", float, 0.0, strict=True, maximum=1.0)

    def jac_at(self, step: int) -> float:
        """The Jacobian-penalty weight before optimiser step ``step`` (0-based)."""
        weight = self.jac_weight
        if self.jac_weight_every:
            weight += self.jac_weight_step * (step // self.jac_weight_every)
        return weight if self.jac_weight_max is None else min(weight, self.jac_weight_max)


@dataclass(frozen=True)
class TrainConfig:
    """Run length, cadence, seed, device and the training-time toolkit.

    - ``pretrain_steps`` / ``pretrain_unroll``: the first steps train every DEQ layer as an
      explicit weight-tied unroll (default length ``deq.max_iter``).
    - ``threads``: torch intra-op CPU threads (0: torch's default). Default 1: the MDEQ digits
      demo took 36 s with 1 thread and 129 s with torch's 2 on the shared 2-core machine.
    - ``budget_delta``: each training step's forward budget is ``deq.max_iter`` plus a random
      integer in [-delta, delta] (at least 1).
    - ``warm_start``: start each solve from the sample's last fixed point (``dk.FixedPointCache``
      keyed by sample index).
    - ``precision``: "fp32", "bf16" (autocast; CPU or CUDA) or "fp16" (autocast, CUDA only).
    - ``compile``: ``torch.compile`` every DEQ cell.
    - ``on_nonfinite``: a NaN/Inf loss "stop"s the run (the last good checkpoint is kept) or
      "skip"s the batch (counted, logged; the run stops after ``max_skips`` in a row).
    - ``tensorboard``: write TensorBoard event files next to ``metrics.jsonl``.

    >>> TrainConfig(steps=100, eval_every=0).threads
    1
    """

    steps: int = 600
    eval_every: int = 200
    checkpoint_every: int = 200
    log_every: int = 10
    seed: int = 0
    pretrain_steps: int = 0
    pretrain_unroll: int | None = None
    device: str = "auto"
    threads: int = 1
    budget_delta: int = 0
    warm_start: bool = False
    precision: str = "fp32"
    compile: bool = False
    on_nonfinite: str = "stop"
    max_skips: int = 10
    tensorboard: bool = True

    def __post_init__(self):
        check_field(self, "train.steps", int, 1)
        if self.pretrain_unroll is not None:
            check_field(self, "train.pretrain_unroll", int, 1)
        for key in ("eval_every", "checkpoint_every", "pretrain_steps", "seed", "threads"):
            check_field(self, f"train.{key}", int, 0)
        check_field(self, "train.budget_delta", int, 0)
        check_field(self, "train.log_every", int, 1)
        check_field(self, "train.max_skips", int, 1)
        check_choice("train.device", self.device, ("auto", "cpu", "cuda"))
        check_choice("train.precision", self.precision, ("fp32", "bf16", "fp16"))
        check_choice("train.on_nonfinite", self.on_nonfinite, ("stop", "skip"))
        for key in ("warm_start", "compile", "tensorboard"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"train.{key} must be true or false, got {getattr(self, key)!r}")


#: Typed sections: recipe key -> schema.
SECTIONS = {
    "deq": DEQConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "loss": LossConfig,
    "train": TrainConfig,
}
TOP_LEVEL = ("description", "model", "task", *SECTIONS)


@dataclass(frozen=True)
class Config:
    """A whole recipe, validated. Build it with :meth:`from_dict` or ``recipe.load_config``.

    ``data_options`` is the dataset's own options object (its class comes from the dataset's
    ``DataSource``), built from the ``data`` keys that are not :class:`DataConfig` fields.

    >>> cfg = Config.from_dict({"model": {"name": "mdeq", "width": 8}, "train": {"steps": 5}})
    >>> cfg.train.steps, cfg.model_kwargs(), cfg.deq.solver, cfg.task_name
    (5, {'width': 8}, 'anderson', 'classification')
    """

    model: dict
    description: str = ""
    task: dict = field(default_factory=dict)
    deq: DEQConfig = field(default_factory=DEQConfig)
    data: DataConfig = field(default_factory=DataConfig)
    data_options: Any = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        # Budgets the trainer sets per step must still hold deq.n_states sampled states; the DEQ
        # layer checks only the budgets it is built with.
        n = self.deq.n_states
        lowest = max(1, self.deq.max_iter - self.train.budget_delta)
        if n > lowest:
            raise ConfigError(
                f"deq.n_states={n} exceeds the smallest training budget {lowest} "
                f"(deq.max_iter={self.deq.max_iter} - train.budget_delta="
                f"{self.train.budget_delta}); lower n_states or budget_delta"
            )
        unroll = self.train.pretrain_unroll or self.deq.max_iter
        if self.train.pretrain_steps and n > unroll:
            raise ConfigError(
                f"deq.n_states={n} exceeds train.pretrain_unroll={unroll}; lower n_states or "
                "unroll further"
            )

    @classmethod
    def from_dict(cls, raw: dict) -> Config:
        """Validate a plain recipe dict (``to_dict``'s inverse); see ``recipe.parse``."""
        from .recipe import parse

        return parse(raw)

    def to_dict(self) -> dict:
        """Plain nested dicts (YAML/JSON/checkpoint friendly), the data options folded back."""
        out = {
            "description": self.description,
            "model": dict(self.model),
            "task": dict(self.task),
        }
        for key in SECTIONS:
            out[key] = dataclasses.asdict(getattr(self, key))
        if self.data_options is not None:
            out["data"].update(dataclasses.asdict(self.data_options))
        return out

    def model_kwargs(self) -> dict:
        return {k: v for k, v in self.model.items() if k != "name"}

    @property
    def task_name(self) -> Any:
        """The recipe's ``task.name``, else the zoo model's ``TASK`` (classification for a
        ``"module:function"`` model without one)."""
        if "name" in self.task:
            return self.task["name"]
        name = self.model["name"]
        if ":" in name:
            import importlib

            module = importlib.import_module(name.partition(":")[0])
            return getattr(module, "TASK", "classification")
        from ..zoo import model_task

        return model_task(name)

    def task_options(self) -> dict:
        return {k: v for k, v in self.task.items() if k != "name"}
