"""The model zoo: one folder per published model, each with ``build()`` and YAML recipes.

Zoo code uses only the public ``deqkit`` API. A model package ``deqkit.zoo.<name>`` exposes
``build(model_cfg, deq_options, data_info) -> nn.Module`` whose ``forward(x)`` returns
``(output, solution)``; ``deq_options`` are ``dk.DEQ`` keyword arguments (the trainer builds them
from a recipe's ``deq`` section). Its recipes live in ``recipes/*.yaml`` beside it.
"""

from __future__ import annotations

import importlib
from pathlib import Path

__all__ = ["MODELS", "build_model", "recipe_paths"]

#: Model name -> the package that builds it.
MODELS = {"mdeq": "deqkit.zoo.mdeq"}


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
