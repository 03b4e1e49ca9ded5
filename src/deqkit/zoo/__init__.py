"""The model zoo: one folder per published model, each with ``build()``, ``TASK`` and recipes.

Zoo code uses only the public ``deqkit`` API. A model package ``deqkit.zoo.<name>`` exposes
``build(model_cfg, deq_options, data_info) -> nn.Module`` whose ``forward(inputs)`` returns
``(output, solution)``; ``deq_options`` are ``dk.DEQ`` keyword arguments (the trainer builds them
from a recipe's ``deq`` section), and ``TASK``, the task it is trained on (a name of
``deqkit.train.task.TASKS`` or a ``Task`` subclass). Its recipes live in ``recipes/*.yaml``.
See ``deqkit/train/README.md``, "Adding a model to the trainer".
"""

from __future__ import annotations

import importlib
from pathlib import Path

__all__ = ["MODELS", "build_model", "model_task", "recipe_paths"]

#: Model name -> the package that builds it.
MODELS = {
    "mdeq": "deqkit.zoo.mdeq",
    "deq_inr": "deqkit.zoo.deq_inr",
    "ignn": "deqkit.zoo.ignn",
    "irnn": "deqkit.zoo.irnn",
    "deq_seq": "deqkit.zoo.deq_seq",
    "deq_transformer": "deqkit.zoo.deq_transformer",
    "trellisnet": "deqkit.zoo.trellisnet",
    "deq_ddim": "deqkit.zoo.deq_ddim",
    "deq_flow": "deqkit.zoo.deq_flow",
}


def build_model(name: str, model_cfg: dict, deq_options: dict, data_info: dict):
    """Build zoo model ``name`` from its options, ``dk.DEQ`` keyword arguments and the data's shape.

    >>> model = build_model("mdeq", {"channels": [8, 16]}, {"max_iter": 4},
    ...                     {"in_channels": 1, "image_size": 16, "num_classes": 10})
    >>> type(model).__name__
    'MDEQClassifier'
    """
    if name not in MODELS:
        raise ValueError(f"unknown zoo model {name!r}; choose one of {sorted(MODELS)}")
    return importlib.import_module(MODELS[name]).build(model_cfg, deq_options, data_info)


def model_task(name: str):
    """The task a zoo model declares (its package's ``TASK``).

    >>> model_task("mdeq")
    'classification'
    """
    if name not in MODELS:
        raise ValueError(f"unknown zoo model {name!r}; choose one of {sorted(MODELS)}")
    package = importlib.import_module(MODELS[name])
    if not hasattr(package, "TASK"):
        raise ValueError(f"zoo model {name!r} declares no TASK in {MODELS[name]}")
    return package.TASK


def recipe_paths() -> dict[str, Path]:
    """Every recipe shipped with the zoo: recipe name -> YAML path.

    >>> "mdeq-digits" in recipe_paths()
    True
    """
    here = Path(__file__).resolve().parent
    paths: dict[str, Path] = {}
    for path in sorted(here.glob("*/recipes/*.yaml")):
        if path.stem in paths:
            raise RuntimeError(
                f"recipe name {path.stem!r} is defined twice: {paths[path.stem]}, {path}"
            )
        paths[path.stem] = path
    return paths
