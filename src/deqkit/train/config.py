"""Typed training configuration: recipe YAML -> :class:`Config`, ``--set key=value`` overrides.

A recipe has six top-level keys: ``description`` (one line), ``model`` (``name`` plus the zoo
model's own keyword arguments, checked by the model's builder), and the typed sections ``deq``,
``data``, ``optim`` and ``train``. Unknown keys are rejected with the list of valid ones.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import deqkit as dk

__all__ = [
    "Config",
    "DEQConfig",
    "DataConfig",
    "OptimConfig",
    "TrainConfig",
    "apply_overrides",
    "deq_kwargs",
    "load_config",
    "resolve_recipe",
]

_SOLVERS = {cls.name: cls for cls in (dk.FixedPoint, dk.Anderson, dk.Broyden, dk.NewtonKrylov)}
_BACKWARDS = {cls.name: cls for cls in (dk.Implicit, dk.Phantom, dk.OneStep, dk.Unrolled)}


def _number(name: str, value: Any, kind: type, minimum: float | None = None, strict=False):
    # YAML 1.1 reads "1e-3" (no dot) as a string; accept numeric strings for numeric fields.
    if isinstance(value, str):
        try:
            value = kind(value)
        except ValueError:
            raise TypeError(f"{name} must be a {kind.__name__}, got string {value!r}") from None
    ok = isinstance(value, numbers.Integral if kind is int else numbers.Real)
    if isinstance(value, bool) or not ok:
        raise TypeError(f"{name} must be a {kind.__name__}, got {type(value).__name__} {value!r}")
    if kind is int and int(value) != value:
        raise TypeError(f"{name} must be an int, got {value!r}")
    value = kind(value)
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value!r}")
    return value


def _choice(name: str, value: Any, choices) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def _set(obj, name, value):
    object.__setattr__(obj, name, value)


def _make(section: str, cls: type, options: Any):
    if not isinstance(options, dict):
        raise TypeError(f"{section} options must be a mapping, got {type(options).__name__}")
    valid = [f.name for f in fields(cls) if f.init] if dataclasses.is_dataclass(cls) else []
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown {section} option(s) {unknown}; valid: {valid}")
    return cls(**options)


@dataclass(frozen=True)
class DEQConfig:
    """How the DEQ layer solves: solver, backward, tolerance and iteration budgets.

    >>> DEQConfig(solver="broyden", max_iter="30").max_iter
    30
    """

    solver: str = "anderson"
    solver_options: dict = field(default_factory=dict)
    backward: str = "implicit"
    backward_options: dict = field(default_factory=dict)
    tol: float = 1e-3
    max_iter: int = 20
    eval_max_iter: int | None = None
    stop_mode: str = "rel"
    on_failure: str = "warn"

    def __post_init__(self):
        _choice("deq.on_failure", self.on_failure, ("warn", "raise", "ignore"))
        _choice("deq.solver", self.solver, _SOLVERS)
        _choice("deq.backward", self.backward, _BACKWARDS)
        _choice("deq.stop_mode", self.stop_mode, ("rel", "abs"))
        _set(self, "tol", _number("deq.tol", self.tol, float, 0.0, strict=True))
        _set(self, "max_iter", _number("deq.max_iter", self.max_iter, int, 1))
        if self.eval_max_iter is not None:
            _set(self, "eval_max_iter", _number("deq.eval_max_iter", self.eval_max_iter, int, 1))
        for key in ("solver_options", "backward_options"):
            if getattr(self, key) is None:
                _set(self, key, {})
        deq_kwargs(self)  # builds the solver and backward objects once, so errors surface now


def deq_kwargs(deq_cfg: dict | DEQConfig) -> dict:
    """Keyword arguments for ``dk.DEQ`` from a recipe's ``deq`` section.

    Args:
        deq_cfg: the ``deq`` mapping of a recipe (or a :class:`DEQConfig`).

    Returns:
        ``{"solver", "backward", "tol", "max_iter", "eval_max_iter", "stop_mode", "on_failure"}``
        with solver
        and backward as deqkit option objects.

    >>> kw = deq_kwargs({"solver": "anderson", "solver_options": {"m": 3}, "max_iter": 10})
    >>> kw["solver"], kw["max_iter"]
    (Anderson(m=3, lam=0.0001, damping=1.0), 10)
    """
    if isinstance(deq_cfg, dict):
        return deq_kwargs(_make("deq", DEQConfig, deq_cfg))
    solver = _make(
        f"deq.solver_options ({deq_cfg.solver})", _SOLVERS[deq_cfg.solver], deq_cfg.solver_options
    )
    backward = _make(
        f"deq.backward_options ({deq_cfg.backward})",
        _BACKWARDS[deq_cfg.backward],
        deq_cfg.backward_options,
    )
    return {
        "solver": solver,
        "backward": backward,
        "tol": deq_cfg.tol,
        "max_iter": deq_cfg.max_iter,
        "eval_max_iter": deq_cfg.eval_max_iter,
        "stop_mode": deq_cfg.stop_mode,
        "on_failure": deq_cfg.on_failure,
    }


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, how it is batched and preprocessed.

    ``batch_size`` is the global batch (split over processes); ``resize``/``pad`` change the
    image size seen by the model (e.g. digits 8x8 -> ``pad: 4`` gives 16x16); ``augment`` turns on
    random shifts (and flips where the dataset allows them).

    >>> DataConfig(name="mnist", batch_size=128).eval_batch_size
    512
    """

    name: str = "digits"
    batch_size: int = 64
    eval_batch_size: int | None = None
    root: str | None = None
    val_fraction: float = 0.0
    resize: int | None = None
    pad: int = 0
    augment: bool = False
    shift: int = 2

    def __post_init__(self):
        from ..data import DATASETS

        _choice("data.name", self.name, DATASETS)
        _set(self, "batch_size", _number("data.batch_size", self.batch_size, int, 1))
        if self.eval_batch_size is None:
            _set(self, "eval_batch_size", 4 * self.batch_size)
        _set(self, "eval_batch_size", _number("data.eval_batch_size", self.eval_batch_size, int, 1))
        if self.root is not None and not isinstance(self.root, str):
            raise TypeError(f"data.root must be a path string or null, got {self.root!r}")
        frac = _number("data.val_fraction", self.val_fraction, float, 0.0)
        if frac >= 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {frac!r}")
        _set(self, "val_fraction", frac)
        if self.resize is not None:
            _set(self, "resize", _number("data.resize", self.resize, int, 1))
        _set(self, "pad", _number("data.pad", self.pad, int, 0))
        _set(self, "shift", _number("data.shift", self.shift, int, 0))
        if not isinstance(self.augment, bool):
            raise TypeError(f"data.augment must be true or false, got {self.augment!r}")


OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("cosine", "constant")


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
        _choice("optim.name", self.name, OPTIMIZERS)
        _choice("optim.scheduler", self.scheduler, SCHEDULERS)
        _set(self, "lr", _number("optim.lr", self.lr, float, 0.0, strict=True))
        _set(self, "weight_decay", _number("optim.weight_decay", self.weight_decay, float, 0.0))
        _set(self, "momentum", _number("optim.momentum", self.momentum, float, 0.0))
        _set(self, "warmup_steps", _number("optim.warmup_steps", self.warmup_steps, int, 0))
        if self.grad_clip is not None:
            clip = _number("optim.grad_clip", self.grad_clip, float, 0.0)
            _set(self, "grad_clip", clip if clip > 0 else None)


@dataclass(frozen=True)
class TrainConfig:
    """Run length, evaluation/checkpoint/log cadence, seed, device and unrolled pretraining.

    The first ``pretrain_steps`` optimiser steps train every DEQ layer as an explicit
    weight-tied unroll of ``pretrain_unroll`` cell applications (default: ``deq.max_iter``).

    >>> TrainConfig(steps=100, eval_every=0).eval_every
    0
    """

    steps: int = 600
    eval_every: int = 200
    checkpoint_every: int = 200
    log_every: int = 10
    seed: int = 0
    pretrain_steps: int = 0
    pretrain_unroll: int | None = None
    device: str = "auto"

    def __post_init__(self):
        _set(self, "steps", _number("train.steps", self.steps, int, 1))
        if self.pretrain_unroll is not None:
            _set(
                self,
                "pretrain_unroll",
                _number("train.pretrain_unroll", self.pretrain_unroll, int, 1),
            )
        for key in ("eval_every", "checkpoint_every", "pretrain_steps", "seed"):
            _set(self, key, _number(f"train.{key}", getattr(self, key), int, 0))
        _set(self, "log_every", _number("train.log_every", self.log_every, int, 1))
        _choice("train.device", self.device, ("auto", "cpu", "cuda"))


_SECTIONS = {"deq": DEQConfig, "data": DataConfig, "optim": OptimConfig, "train": TrainConfig}
TOP_LEVEL = ("description", "model", *_SECTIONS)


@dataclass(frozen=True)
class Config:
    """A whole recipe, validated. Build it with :meth:`from_dict` or :func:`load_config`.

    >>> cfg = Config.from_dict({"model": {"name": "mdeq", "width": 8}, "train": {"steps": 5}})
    >>> cfg.train.steps, cfg.model_kwargs(), cfg.deq.solver
    (5, {'width': 8}, 'anderson')
    """

    model: dict
    description: str = ""
    deq: DEQConfig = field(default_factory=DEQConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        if not isinstance(self.model, dict) or not isinstance(self.model.get("name"), str):
            raise ValueError(f"model must be a mapping with a 'name', got {self.model!r}")
        if not isinstance(self.description, str):
            raise TypeError(f"description must be a string, got {self.description!r}")

    @classmethod
    def from_dict(cls, raw: dict) -> Config:
        if not isinstance(raw, dict):
            raise TypeError(f"a recipe must be a mapping, got {type(raw).__name__}")
        unknown = sorted(set(raw) - set(TOP_LEVEL))
        if unknown:
            raise ValueError(f"unknown recipe key(s) {unknown}; valid: {list(TOP_LEVEL)}")
        if "model" not in raw:
            raise ValueError("a recipe needs a 'model' section with a 'name'")
        sections = {k: _make(k, c, raw.get(k) or {}) for k, c in _SECTIONS.items()}
        return cls(model=dict(raw["model"]), description=raw.get("description") or "", **sections)

    def to_dict(self) -> dict:
        """Plain nested dicts (YAML/JSON/checkpoint friendly); ``from_dict`` inverts it."""
        return dataclasses.asdict(self)

    def model_kwargs(self) -> dict:
        return {k: v for k, v in self.model.items() if k != "name"}


def _parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text) if text.strip() else None


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Apply ``section.key=value`` overrides (values parsed as YAML) to a raw recipe dict.

    Keys of the typed sections must exist; ``model.*`` keys go to the model builder, and
    ``deq.solver_options.*`` / ``deq.backward_options.*`` to the solver and backward objects,
    which reject unknown names themselves.

    >>> apply_overrides({"model": {"name": "m"}}, ["train.steps=7", "deq.solver_options.m=3"])
    {'model': {'name': 'm'}, 'train': {'steps': 7}, 'deq': {'solver_options': {'m': 3}}}
    >>> apply_overrides({}, ["train.stepz=7"])
    Traceback (most recent call last):
    ...
    ValueError: unknown override key 'train.stepz'; valid train keys: ['steps', ...]
    """
    raw = _deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like section.key=value")
        path = key.split(".")
        head = path[0]
        if head not in TOP_LEVEL:
            raise ValueError(f"unknown override key {key!r}; valid sections: {list(TOP_LEVEL)}")
        if head == "description":
            if len(path) != 1:
                raise ValueError(f"unknown override key {key!r}; description has no sub-keys")
            raw["description"] = text
            continue
        if len(path) < 2:
            raise ValueError(f"override {key!r} must name a key inside {head!r}, e.g. {head}.x=1")
        if head in _SECTIONS:
            valid = [f.name for f in fields(_SECTIONS[head])]
            if path[1] not in valid:
                raise ValueError(f"unknown override key {key!r}; valid {head} keys: {valid}")
            nested = ("solver_options", "backward_options")
            if len(path) > 2 and path[1] not in nested:
                raise ValueError(f"override key {key!r}: {head}.{path[1]} has no sub-keys")
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ValueError(f"override key {key!r}: {part!r} is not a mapping")
            node = child
        node[path[-1]] = _parse_value(text)
    return raw


def _deepcopy(raw: Any) -> Any:
    if isinstance(raw, dict):
        return {k: _deepcopy(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_deepcopy(v) for v in raw]
    return raw


def resolve_recipe(recipe: str | Path) -> Path:
    """A recipe name from ``deqkit recipes`` or a path to a YAML file -> the YAML path.

    >>> resolve_recipe("no-such-recipe")
    Traceback (most recent call last):
    ...
    ValueError: unknown recipe 'no-such-recipe' (not a file either); known recipes: [...]
    """
    path = Path(recipe).expanduser()
    if path.is_file():
        return path
    from ..zoo import recipe_paths

    known = recipe_paths()
    if str(recipe) in known:
        return Path(known[str(recipe)])
    raise ValueError(
        f"unknown recipe {str(recipe)!r} (not a file either); known recipes: {sorted(known)}"
    )


def load_config(recipe: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a recipe (name or YAML path), apply overrides, validate.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "r.yaml")
    >>> _ = open(p, "w").write("model: {name: mdeq}\\ntrain: {steps: 3}\\n")
    >>> load_config(p, ["optim.lr=1e-2"]).optim.lr
    0.01
    """
    import yaml

    path = resolve_recipe(recipe)
    with open(path) as fh:
        try:
            raw = yaml.safe_load(fh)
        except yaml.YAMLError as exc:
            raise ValueError(f"recipe {path} is not valid YAML: {exc}") from None
    return Config.from_dict(apply_overrides(raw or {}, overrides))
