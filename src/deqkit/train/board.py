"""TensorBoard event files next to ``metrics.jsonl``: every logged scalar and the task's images.

Scalars go under ``train/<key>`` and ``<split>/<key>`` (eval), images under ``<split>/<name>``.
A resumed run purges the events after its checkpoint step, as ``metrics.jsonl`` drops its lines.

>>> import tempfile, os
>>> run = tempfile.mkdtemp()
>>> board = Board(run, purge_step=None)
>>> board.scalars("train", 1, {"loss": 0.5, "pretrain": True})
>>> board.close(); any(n.startswith("events.out.tfevents") for n in os.listdir(run))
True
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Board"]


class Board:
    """A ``torch.utils.tensorboard.SummaryWriter`` on ``run_dir`` (rank 0 only)."""

    def __init__(self, run_dir: str | Path, purge_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir), purge_step=purge_step)

    def scalars(self, prefix: str, step: int, values: dict[str, Any]) -> None:
        for key, value in values.items():
            # Flags and strings stay in metrics.jsonl; TensorBoard draws numbers.
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def images(self, prefix: str, step: int, images: dict[str, Any]) -> None:
        for name, image in images.items():
            array = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
            self.writer.add_image(f"{prefix}/{name}", array, step, dataformats="HWC")

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
