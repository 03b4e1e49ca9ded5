"""Tasks: what a model is trained to do, declared once, read by the loop, evaluation and plots.

The trainer knows tasks, never models. A :class:`Task` says

- how a batch splits into the model's inputs and the targets (:meth:`Task.split`),
- how the model is called on the inputs (:meth:`Task.forward`; default ``model(inputs)``, which
  must return ``(output, solution)``; ``solution`` is a ``dk.Solution`` or ``None``),
- the task loss (:meth:`Task.criterion`) and the training loss with the DEQ terms of the recipe
  (:meth:`Task.loss`: Jacobian penalty, Skip-DEQ loss, fixed-point correction),
- the evaluation metrics (:meth:`Task.metrics`, torchmetrics objects, which also do the DDP
  reduction: ``compute()`` gathers every rank's state) and the one that decides "best"
  (:attr:`Task.best`),
- the cheap per-step training metrics shown in the progress bar and logged per step
  (:meth:`Task.step_metrics`),
- the pictures of a run (:meth:`Task.pictures`: images for TensorBoard and ``deqkit plot``).

A zoo package names its task in ``TASK`` (a name of :data:`TASKS` or a :class:`Task` subclass);
a recipe may choose another with ``task: {name: ..., <options>}``, the options going to the
task's constructor.

>>> import torch
>>> task = Classification({"num_classes": 3})
>>> logits, y = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), torch.tensor([0, 1])
>>> task.step_metrics(logits, y)
{'acc': 0.5}
>>> metrics = task.metrics()
>>> task.update(metrics, logits, y)
>>> {k: round(float(m.compute()), 3) for k, m in metrics.items()}
{'acc': 0.5}
>>> task.best
Best(metric='acc', mode='max')
"""

from __future__ import annotations

import importlib
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import nn

__all__ = [
    "TASKS",
    "Best",
    "Classification",
    "DEQTerms",
    "StepLoss",
    "Task",
    "get_task",
]


@dataclass(frozen=True)
class Best:
    """The evaluation metric that decides the best checkpoint, and whether higher is better.

    >>> Best("loss", "min").better(0.5, 0.7)
    True
    """

    metric: str
    mode: Literal["max", "min"] = "max"

    def __post_init__(self):
        if self.mode not in ("max", "min"):
            raise ValueError(f"Best.mode must be 'max' or 'min', got {self.mode!r}")

    def better(self, value: float, than: float | None) -> bool:
        """Whether ``value`` beats ``than`` (``None``: nothing yet, so it does)."""
        if than is None or not math.isfinite(than):
            return math.isfinite(value)
        return value > than if self.mode == "max" else value < than


@dataclass(frozen=True)
class DEQTerms:
    """Weights of the DEQ training terms at this step, filled by the trainer from the recipe.

    Args:
        jac_weight: weight of the Jacobian penalty ``sol.outputs.jac_loss`` (already scheduled: the
            trainer raises it every N steps when the recipe asks for that).
        skip_weight: weight of the Skip-DEQ initialiser loss ``sol.outputs.skip_loss``.
        fpc_gamma: decay of the fixed-point correction, used when the model returns one
            output per sampled state (a list; ``DEQ(n_states=k)``).

    >>> DEQTerms().jac_weight
    0.0
    """

    jac_weight: float = 0.0
    skip_weight: float = 0.0
    fpc_gamma: float = 0.8


@dataclass
class StepLoss:
    """The training loss of one batch and its parts, each logged per step.

    ``total`` is what the trainer differentiates; ``terms`` maps a log key ("task", "jac",
    "skip", ...) to a scalar tensor (detached by the trainer before logging).
    """

    total: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)


def _solution_term(sol: Any, name: str) -> torch.Tensor | None:
    # The layer's own outputs (Jacobian penalty, Skip-DEQ loss) sit in ``sol.outputs``.
    return None if sol is None else getattr(sol.outputs, name, None)


class Task(ABC):
    """What a model is trained to do. Subclass it, set :attr:`name` and :attr:`best`.

    Args:
        data_info: the dataset's description (``DataSplits.info``: sizes, classes, vocabulary);
            the same dict the model builder receives.

    The recipe's ``task`` section without ``name`` goes to a subclass's own keyword arguments;
    unknown ones are rejected (Python does, for named parameters).

    Outputs may be a single prediction or, for fixed-point correction, a list with one
    prediction per sampled state, first to last; :meth:`final` picks the last for metrics.
    """

    #: The name recipes use (``task: {name: ...}``).
    name: ClassVar[str]
    #: The evaluation metric that decides "best".
    best: ClassVar[Best]

    def __init__(self, data_info: Mapping[str, Any]):
        self.data_info = dict(data_info)

    def split(self, batch: Any) -> tuple[Any, Any]:
        """A batch from the dataset -> ``(inputs, targets)`` (default: the batch is that pair)."""
        inputs, targets = batch
        return inputs, targets

    def forward(self, model: nn.Module, inputs: Any) -> tuple[Any, Any]:
        """Run the model: ``(output, solution)``. Override for models taking several inputs."""
        return model(inputs)

    @abstractmethod
    def criterion(self, output: Any, targets: Any) -> torch.Tensor:
        """The task loss of one prediction (a scalar, mean over the batch)."""

    def loss(self, output: Any, targets: Any, sol: Any, terms: DEQTerms) -> StepLoss:
        """Training loss: the task loss (fixed-point corrected when ``output`` is a list) plus
        the weighted Jacobian penalty and Skip-DEQ loss found on the solution."""
        import deqkit as dk

        if isinstance(output, list):
            task = dk.fixed_point_correction(self.criterion, output, targets, terms.fpc_gamma)
            parts = {"task": task, "task_final": self.criterion(output[-1], targets).detach()}
        else:
            task = self.criterion(output, targets)
            parts = {"task": task}
        total = task
        jac = _solution_term(sol, "jac_loss")
        if jac is not None:
            parts["jac"] = jac
            if terms.jac_weight:
                total = total + terms.jac_weight * jac
        skip = _solution_term(sol, "skip_loss")
        if skip is not None:
            parts["skip"] = skip
            if terms.skip_weight:
                total = total + terms.skip_weight * skip
        return StepLoss(total, parts)

    @staticmethod
    def final(output: Any) -> Any:
        """The prediction of the last state when ``output`` holds one per sampled state."""
        return output[-1] if isinstance(output, list) else output

    @abstractmethod
    def metrics(self) -> dict[str, Any]:
        """Fresh evaluation metrics, name -> torchmetrics ``Metric`` (one set per evaluation).

        The trainer adds ``loss`` (the mean criterion) and the solver statistics itself.
        """

    def update(self, metrics: dict[str, Any], output: Any, targets: Any) -> None:
        """Feed one evaluation batch to the metrics (default: ``m.update(final, targets)``)."""
        final = self.final(output)
        for metric in metrics.values():
            metric.update(final, targets)

    def step_metrics(self, output: Any, targets: Any) -> dict[str, float]:
        """Cheap metrics of a training batch, logged every step (batch means; default none)."""
        return {}

    def count(self, inputs: Any, targets: Any) -> int:
        """Examples in a batch: the weight of its loss in means over batches and ranks
        (default: dim 0 of the first target tensor, or of the first input without targets)."""
        tree = inputs if targets is None else targets
        return int(next(iter(_leaves(tree))).shape[0])

    def pictures(self, inputs: Any, targets: Any, output: Any) -> dict[str, Any]:
        """Images of the first evaluation batch, name -> float array (H, W, 3) in [0, 1];
        written to TensorBoard at each evaluation and as PNGs at the end. Default: none."""
        return {}

    def model_metrics(self, model: nn.Module, dataset: Any) -> dict[str, float]:
        """Evaluation metrics that need the model, not batches (a generative model's sample
        quality), computed once per evaluation on rank 0. Default: none."""
        return {}


def _leaves(tree: Any):
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, Mapping):
        for value in tree.values():
            yield from _leaves(value)
    elif isinstance(tree, (tuple, list)):
        for value in tree:
            yield from _leaves(value)


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return (logits.argmax(1) == y).float().mean().item()


class Classification(Task):
    """Single-label classification: cross-entropy, accuracy ("best", max).

    Batches are ``(x, y)`` with integer labels ``y``; the model returns logits (N, C).
    ``data_info`` needs ``num_classes``.
    """

    name = "classification"
    best = Best("acc", "max")

    def __init__(self, data_info: Mapping[str, Any], label_smoothing: float = 0.0):
        super().__init__(data_info)
        if "num_classes" not in self.data_info:
            raise ValueError(f"classification needs data_info['num_classes'], got {data_info!r}")
        self.num_classes = int(self.data_info["num_classes"])
        self.label_smoothing = float(label_smoothing)

    def criterion(self, output, targets):
        return nn.functional.cross_entropy(output, targets, label_smoothing=self.label_smoothing)

    def metrics(self):
        from torchmetrics.classification import MulticlassAccuracy

        return {"acc": MulticlassAccuracy(self.num_classes, average="micro")}

    def step_metrics(self, output, targets):
        return {"acc": _accuracy(self.final(output), targets)}


#: Task name -> ``"module:Class"``; the shipped tasks. A zoo package with its own task names the
#: class in its ``TASK`` instead, or a recipe names it as ``task.name: "package.module:Class"``.
TASKS = {
    "classification": "deqkit.train.task:Classification",
    "multilabel": "deqkit.train.tasks:MultiLabel",
    "language_model": "deqkit.train.tasks:LanguageModel",
    "regression": "deqkit.train.tasks:DenseRegression",
    "signal": "deqkit.train.tasks:SignalFit",
    "generative": "deqkit.train.tasks:Generative",
}


def get_task(name: str | type[Task]) -> type[Task]:
    """A task class from a :data:`TASKS` name, a ``"module:Class"`` path or the class itself.

    >>> get_task("classification").__name__
    'Classification'
    >>> get_task("ranking")
    Traceback (most recent call last):
    ...
    ValueError: unknown task 'ranking'; choose one of [...] or give "package.module:Class"
    """
    if isinstance(name, type) and issubclass(name, Task):
        return name
    if not isinstance(name, str):
        raise TypeError(f"a task is a name or a Task subclass, got {name!r}")
    path = TASKS.get(name, name if ":" in name else None)
    if path is None:
        raise ValueError(
            f'unknown task {name!r}; choose one of {sorted(TASKS)} or give "package.module:Class"'
        )
    module_name, _, attr = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"task {name!r}: cannot import {path} ({exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TypeError(f"task {name!r}: {path} is not a deqkit Task subclass")
    return cls
