"""Training: typed recipe config, the loop, checkpoints, JSONL metrics, torch.distributed.

The ``deqkit train`` command is :func:`train` on :func:`load_config`'s result:

>>> from deqkit.train import load_config
>>> cfg = load_config("mdeq-digits", ["train.steps=10"])
>>> cfg.train.steps, cfg.model["name"], cfg.data.name
(10, 'mdeq', 'digits')
"""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import Config, apply_overrides, deq_kwargs, load_config, resolve_recipe
from .evaluate import evaluate, evaluate_checkpoint
from .loop import train

__all__ = [
    "CheckpointError",
    "Config",
    "apply_overrides",
    "deq_kwargs",
    "evaluate",
    "evaluate_checkpoint",
    "load_checkpoint",
    "load_config",
    "resolve_recipe",
    "save_checkpoint",
    "train",
]
