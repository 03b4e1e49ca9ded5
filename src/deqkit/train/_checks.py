"""Validation of recipe values: each check raises a one-line :class:`ConfigError` naming the key
and the value (the recipe sections in :mod:`deqkit.train.config` use them).

>>> check_number("train.steps", 5, int, 1)
5
>>> check_number("optim.lr", float("nan"), float)
Traceback (most recent call last):
...
deqkit.train.errors.ConfigError: optim.lr must be a finite number, got nan
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

from .errors import ConfigError

__all__ = ["build_options", "check_choice", "check_field", "check_number", "set_field"]


def check_number(name: str, value: Any, kind: type, minimum=None, strict=False, maximum=None):
    """``value`` as ``kind`` (int or float; not bool), finite, within the bounds (``strict``:
    above ``minimum``, else at least ``minimum``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        article = "an" if kind is int else "a"
        raise ConfigError(f"{name} must be {article} {kind.__name__}, got {value!r}")
    value = kind(value)
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ConfigError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices) -> None:
    """Refuse a ``value`` not among ``choices``.

    >>> check_choice("train.device", "tpu", ("auto", "cpu", "cuda"))
    Traceback (most recent call last):
    ...
    deqkit.train.errors.ConfigError: train.device must be one of ['auto', 'cpu', 'cuda'], got 'tpu'
    """
    if value not in choices:
        raise ConfigError(f"{name} must be one of {sorted(choices)}, got {value!r}")


def set_field(obj: Any, name: str, value: Any) -> None:
    """Set a field of a frozen dataclass from its ``__post_init__`` (the checked value)."""
    object.__setattr__(obj, name, value)


def build_options(what: str, cls: type, options: dict):
    """``cls(**options)`` with unknown keys and the class's own errors as a ConfigError.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Opts:
    ...     m: int = 5
    >>> build_options("deq.solver_options", Opts, {"n": 3})
    Traceback (most recent call last):
    ...
    deqkit.train.errors.ConfigError: unknown deq.solver_options option(s) ['n']; valid: ['m']
    """
    valid = [f.name for f in fields(cls) if f.init]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"unknown {what} option(s) {unknown}; valid: {valid}")
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: {exc}") from None


def check_field(obj: Any, key: str, kind: type, minimum=None, strict=False, maximum=None):
    """Check the field named by the last part of ``key`` ("section.field") of a frozen
    dataclass with :func:`check_number` and store the checked value; returns it.

    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Train:
    ...     steps: float = 5.0
    >>> t = Train(); check_field(t, "train.steps", int, 1)
    Traceback (most recent call last):
    ...
    deqkit.train.errors.ConfigError: train.steps must be an int, got 5.0
    """
    name = key.rpartition(".")[2]
    value = check_number(key, getattr(obj, name), kind, minimum, strict, maximum)
    set_field(obj, name, value)
    return value
