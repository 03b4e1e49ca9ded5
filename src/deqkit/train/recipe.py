"""Recipes: a name or YAML file -> :class:`~deqkit.train.config.Config`, with ``--set``
overrides, through OmegaConf (typed merge into the section schemas, dot-list overrides).

Errors name the file, the key and the valid keys; duplicate YAML keys and invalid UTF-8 are
rejected.

>>> load_config("mdeq-digits", ["train.steps=10"]).train.steps
10
>>> load_config("mdeq-digits", ["train.stepz=1"])
Traceback (most recent call last):
...
deqkit.train.errors.ConfigError: unknown key 'train.stepz'; valid train keys: ['steps', ...]
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .config import SECTIONS, TOP_LEVEL, Config, DataConfig
from .errors import ConfigError

__all__ = ["apply_overrides", "load_config", "parse", "read_recipe", "resolve_recipe"]


def _valid(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _typed(section: str, cls: type, values: Any):
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{section} must be a mapping, got {type(values).__name__} {values!r}")
    unknown = sorted(set(values) - set(_valid(cls)))
    if unknown:
        keys = ", ".join(repr(f"{section}.{k}") for k in unknown)
        raise ConfigError(f"unknown key {keys}; valid {section} keys: {_valid(cls)}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), values)
        return OmegaConf.to_object(merged)
    except ConfigKeyError as exc:  # a key OmegaConf found that the check above did not
        raise ConfigError(f"{section}.{exc.key}: unknown key; valid: {_valid(cls)}") from None
    except OmegaConfBaseException as exc:
        key = f"{section}.{exc.full_key}" if exc.full_key else section
        value = values.get(str(exc.full_key).split(".")[0], "?") if exc.full_key else values
        raise ConfigError(f"{key}: invalid value {value!r} ({exc.msg.splitlines()[0]})") from None


def parse(raw: Any) -> Config:
    """Validate a recipe dict into a :class:`Config`.

    >>> parse({"model": {"name": "mdeq"}, "data": {"name": "digits", "pad": 2}}).data_options.pad
    2
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"a recipe must be a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(TOP_LEVEL))
    if unknown:
        raise ConfigError(f"unknown recipe key(s) {unknown}; valid: {list(TOP_LEVEL)}")
    model = raw.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise ConfigError(f"a recipe needs a 'model' mapping with a 'name', got {model!r}")
    task = raw.get("task") or {}
    if not isinstance(task, dict):
        raise ConfigError(f"task must be a mapping (name + options), got {task!r}")
    description = raw.get("description") or ""
    if not isinstance(description, str):
        raise ConfigError(f"description must be a string, got {description!r}")
    sections = {k: raw.get(k) for k in SECTIONS}
    data = dict(sections.pop("data") or {})
    common = {k: data.pop(k) for k in _valid(DataConfig) if k in data}
    data_cfg = _typed("data", DataConfig, common)
    from ..data import data_source

    options_cls = data_source(data_cfg.name).options
    unknown = sorted(set(data) - set(_valid(options_cls)))
    if unknown:
        keys = ", ".join(repr(f"data.{k}") for k in unknown)
        raise ConfigError(
            f"unknown key {keys} for dataset {data_cfg.name!r}; valid data keys: "
            f"{_valid(DataConfig) + _valid(options_cls)}"
        )
    try:
        data_options = options_cls(**data)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"data ({data_cfg.name}): {exc}") from None
    typed = {k: _typed(k, cls, sections[k]) for k, cls in SECTIONS.items() if k != "data"}
    return Config(
        model=dict(model),
        description=description,
        task=dict(task),
        data=data_cfg,
        data_options=data_options,
        **typed,
    )


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Apply ``section.key=value`` overrides (OmegaConf dot-list, values parsed as YAML).

    >>> apply_overrides({"model": {"name": "m"}}, ["train.steps=7", "deq.solver_options.m=3"])
    {'model': {'name': 'm'}, 'train': {'steps': 7}, 'deq': {'solver_options': {'m': 3}}}
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like section.key=value")
        head = key.strip().split(".")[0]
        if head not in TOP_LEVEL:
            raise ConfigError(f"unknown key {key.strip()!r}; valid sections: {list(TOP_LEVEL)}")
        if head != "description" and "." not in key:
            raise ConfigError(f"override {key!r} must name a key inside {head!r}, e.g. {head}.x=1")
    conf = OmegaConf.create(raw)
    for item in overrides:
        key = item.partition("=")[0].strip()
        try:
            value = OmegaConf.select(OmegaConf.from_dotlist([item]), key)
            # A mapping given on the command line replaces the recipe's (--set
            # deq.solver_options={} clears it), as a scalar does.
            OmegaConf.update(conf, key, value, merge=False, force_add=True)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"--set {item}: {exc.msg.splitlines()[0]}") from None
    return OmegaConf.to_container(conf)


def resolve_recipe(recipe: str | Path) -> Path:
    """A recipe name from ``deqkit recipes`` or a path to a YAML file -> the YAML path.

    >>> resolve_recipe("no-such-recipe")
    Traceback (most recent call last):
    ...
    deqkit.train.errors.ConfigError: unknown recipe 'no-such-recipe' (not a file either); ...
    """
    path = Path(recipe).expanduser()
    if path.is_file():
        return path
    from ..zoo import recipe_paths

    known = recipe_paths()
    if str(recipe) in known:
        return Path(known[str(recipe)])
    if path.exists():
        raise ConfigError(f"recipe {path} is not a file")
    raise ConfigError(
        f"unknown recipe {str(recipe)!r} (not a file either); known recipes: {sorted(known)}"
    )


def read_recipe(path: str | Path) -> dict:
    """The raw mapping of a recipe YAML file (duplicate keys and invalid UTF-8 rejected)."""
    from omegaconf import OmegaConf

    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"recipe {path} is not valid UTF-8 (byte {exc.start})") from None
    try:
        raw = OmegaConf.to_container(OmegaConf.create(text)) if text.strip() else {}
    except Exception as exc:  # yaml's and OmegaConf's parse errors have no common base
        detail = " ".join(str(exc).split())
        raise ConfigError(f"recipe {path} is not valid YAML: {detail}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"recipe {path} must be a mapping, got {type(raw).__name__}")
    return raw


def load_config(recipe: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a recipe (name or YAML path), apply overrides, validate."""
    path = resolve_recipe(recipe)
    return parse(apply_overrides(read_recipe(path), overrides))
