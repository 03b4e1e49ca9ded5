"""User errors of the trainer and the command line: one clear line each, no traceback.

Everything a user can get wrong (a recipe key, a data folder, a checkpoint, a run directory) is
raised as a :class:`UserError` subclass at the boundary where the user's input is read. The CLI
prints those as ``deqkit: error: <message>`` and exits with status 2; any other exception is a
bug and keeps its traceback.

>>> str(ConfigError("train.steps must be >= 1, got 0"))
'train.steps must be >= 1, got 0'
"""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "DataError", "RunError", "UserError"]


class UserError(ValueError):
    """Something the user gave is wrong; the message says what and what is valid."""


class ConfigError(UserError):
    """A recipe, ``--set`` override or model/task option is invalid."""


class DataError(UserError):
    """A dataset cannot be loaded (missing folder, malformed file, unsafe pickle)."""


class CheckpointError(UserError):
    """A checkpoint file is missing, truncated, corrupt, foreign or does not fit the model."""


class RunError(UserError):
    """A run cannot go on or start: non-finite loss, a run directory in the way."""
