"""Training: tasks, the typed recipe config, the loop, checkpoints, JSONL/TensorBoard metrics,
torch.distributed. See ``README.md`` here, "Adding a model to the trainer".

The ``deqkit train`` command is :func:`train` on :func:`load_config`'s result:

>>> from deqkit.train import load_config
>>> cfg = load_config("mdeq-digits", ["train.steps=10"])
>>> cfg.train.steps, cfg.model["name"], cfg.data.name, cfg.task_name
(10, 'mdeq', 'digits', 'classification')
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .config import Config, deq_kwargs
from .errors import CheckpointError, ConfigError, DataError, RunError, UserError
from .evaluate import evaluate, evaluate_checkpoint
from .loop import train
from .recipe import apply_overrides, load_config, resolve_recipe
from .task import TASKS, Best, Classification, DEQTerms, StepLoss, Task, get_task

__all__ = [
    "TASKS",
    "Best",
    "CheckpointError",
    "Classification",
    "Config",
    "ConfigError",
    "DEQTerms",
    "DataError",
    "RunError",
    "StepLoss",
    "Task",
    "UserError",
    "apply_overrides",
    "deq_kwargs",
    "evaluate",
    "evaluate_checkpoint",
    "get_task",
    "load_checkpoint",
    "load_config",
    "resolve_recipe",
    "save_checkpoint",
    "train",
]
