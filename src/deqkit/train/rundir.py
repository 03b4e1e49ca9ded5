"""The run directory: refusing one that holds another run, clearing it for ``--force``, writing
the resolved recipe and the task's pictures.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from .errors import RunError

__all__ = ["RUN_FILES", "check_run_dir", "clear_run", "save_pictures", "write_config"]

#: The files a run writes (besides TensorBoard event files and ``pictures/``).
RUN_FILES = (
    "checkpoint.pt",
    "best.pt",
    "metrics.jsonl",
    "config.yaml",
    "summary.json",
    "trace.json",
)


def check_run_dir(out: Path, resume: bool, force: bool) -> None:
    """Refuse a run directory that is a file, lies under a file, or holds another run.

    >>> import tempfile
    >>> run = Path(tempfile.mkdtemp())
    >>> check_run_dir(run, resume=False, force=False)    # empty: fine
    >>> _ = (run / "metrics.jsonl").write_text("")
    >>> check_run_dir(run, resume=False, force=False)
    Traceback (most recent call last):
    ...
    deqkit.train.errors.RunError: ... already holds a run (metrics.jsonl); use --resume to continue it, --force to start over (deletes it) or another --out
    """  # noqa: E501
    for parent in (out, *out.parents):
        if parent.exists() and not parent.is_dir():
            where = "is a file" if parent == out else f"lies under the file {parent}"
            raise RunError(f"--out {out} {where}; choose a directory")
    if resume:
        if not (out / "checkpoint.pt").is_file():
            raise RunError(f"--resume: {out / 'checkpoint.pt'} does not exist")
        return
    taken = [n for n in ("checkpoint.pt", "metrics.jsonl", "config.yaml") if (out / n).exists()]
    if taken and not force:
        raise RunError(
            f"{out} already holds a run ({', '.join(taken)}); use --resume to continue it, "
            "--force to start over (deletes it) or another --out"
        )


def clear_run(out: Path) -> None:
    """Delete what a run wrote into ``out``; other files there are kept (``--force``).

    >>> import tempfile
    >>> run = Path(tempfile.mkdtemp())
    >>> for name in ("metrics.jsonl", "notes.txt"):
    ...     _ = (run / name).write_text("")
    >>> clear_run(run); sorted(p.name for p in run.iterdir())
    ['notes.txt']
    """
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for event in out.glob("events.out.tfevents.*"):
        event.unlink()
    if (out / "pictures").is_dir():
        shutil.rmtree(out / "pictures")


def write_config(out: Path, config: dict) -> None:
    """The resolved recipe as ``out/config.yaml``, keys in recipe order.

    >>> import tempfile
    >>> run = Path(tempfile.mkdtemp())
    >>> write_config(run, {"model": {"name": "mdeq"}, "deq": {"tol": 0.001}})
    >>> print((run / "config.yaml").read_text().strip())
    model:
      name: mdeq
    deq:
      tol: 0.001
    """
    import yaml

    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def save_pictures(out: Path, pictures: dict[str, Any]) -> None:
    """The task's images as ``out/pictures/<name>.png`` (values clipped to [0, 1]).

    >>> import tempfile, numpy as np
    >>> run = Path(tempfile.mkdtemp())
    >>> save_pictures(run, {"sample": np.zeros((4, 4, 3))})
    >>> [p.name for p in (run / "pictures").iterdir()]
    ['sample.png']
    """
    if not pictures:
        return
    import matplotlib.pyplot as plt
    import numpy as np

    folder = out / "pictures"
    folder.mkdir(exist_ok=True)
    for name, image in pictures.items():
        plt.imsave(folder / f"{name}.png", np.clip(np.asarray(image, dtype=float), 0.0, 1.0))
