"""Metrics as JSON lines: one object per training step or evaluation, appended and flushed."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["MetricsLog", "read_metrics", "strict_json"]


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/Inf; a gap in the curve says the same
    return value


def strict_json(data: Any, **kwargs: Any) -> str:
    """JSON text with every NaN/Inf replaced by null (strict JSON, as every run file is).

    >>> strict_json({"a": float("nan"), "b": [1.0, float("inf")]})
    '{"a": null, "b": [1.0, null]}'
    """

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return _plain(value)

    return json.dumps(clean(data), allow_nan=False, **kwargs)


class MetricsLog:
    """Append-only JSONL log. ``truncate_after(step)`` drops lines a resumed run will redo.

    >>> import tempfile, os
    >>> log = MetricsLog(os.path.join(tempfile.mkdtemp(), "m.jsonl"))
    >>> log.write(kind="train", step=1, loss=0.5); log.write(kind="train", step=2, loss=0.4)
    >>> log.truncate_after(1); [r["step"] for r in read_metrics(log.path)]
    [1]
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **record: Any) -> None:
        line = json.dumps({k: _plain(v) for k, v in record.items()}, allow_nan=False)
        with open(self.path, "a") as fh:
            fh.write(line + "\n")

    def truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        keep = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        with open(self.path, "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in keep)


def read_metrics(path: str | Path, kind: str | None = None) -> list[dict]:
    """All records of a JSONL metrics file (optionally only one ``kind``); a torn last line,
    left by a killed run, is skipped."""
    records = []
    with open(path) as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if kind is None or record.get("kind") == kind:
                records.append(record)
    return records
