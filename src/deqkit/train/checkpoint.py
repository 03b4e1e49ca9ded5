"""Checkpoints: written atomically, read back with ``torch.load(weights_only=True)``.

Everything stored is a tensor or a plain Python value (RNG states included), so loading never
unpickles arbitrary objects; a torn or foreign file gives a :class:`CheckpointError`.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError

__all__ = [
    "CheckpointError",
    "capture_rng",
    "load_checkpoint",
    "load_model_state",
    "restore_rng",
    "save_checkpoint",
]

#: Keys every deqkit training checkpoint carries.
REQUIRED = ("format", "step", "config", "model")
FORMAT = "deqkit-checkpoint-v2"

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _first_line(exc: BaseException) -> str:
    # torch's unpickling errors embed ANSI colour codes and advise weights_only=False, which
    # would run arbitrary code from the file: keep only the first plain line.
    text = _ANSI.sub("", str(exc)).strip().splitlines()
    line = text[0] if text else ""
    if "weights_only" in line or "Weights only load failed" in line:
        line = "it holds objects other than tensors and plain values"
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically: a temp file in the same folder, then rename.

    A crash mid-write leaves the previous checkpoint intact, never a torn file.

    >>> import tempfile, os
    >>> p = save_checkpoint(os.path.join(tempfile.mkdtemp(), "c.pt"), {"step": 3})
    >>> torch.load(p, weights_only=True)["step"]
    3
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a deqkit training checkpoint safely (``weights_only=True``) and check its keys.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "bad.pt")
    >>> _ = open(p, "wb").write(b"not a checkpoint")
    >>> load_checkpoint(p)
    Traceback (most recent call last):
    ...
    deqkit.train.errors.CheckpointError: cannot read checkpoint ...
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is truncated, corrupt or not a torch "
            f"checkpoint ({_first_line(exc)})"
        ) from None
    found = state.get("format") if isinstance(state, dict) else None
    if found != FORMAT:
        what = f"format {found!r}" if found else "no deqkit format tag"
        raise CheckpointError(
            f"{path} is not a deqkit training checkpoint of format {FORMAT!r} ({what})"
        )
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}")
    return state


def load_model_state(model: torch.nn.Module, state: dict, what: str) -> None:
    """``model.load_state_dict(state)``, or a :class:`CheckpointError` naming the missing,
    unexpected and mis-shaped keys.

    >>> m = torch.nn.Linear(2, 3)
    >>> load_model_state(m, {"weight": torch.zeros(3, 3)}, "checkpoint x.pt")
    Traceback (most recent call last):
    ...
    deqkit.train.errors.CheckpointError: checkpoint x.pt does not fit the model: missing keys ['bias']; shapes differ: weight (3, 3) in the file vs (3, 2) in the model
    """  # noqa: E501
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k} {tuple(state[k].shape)} in the file vs {tuple(own[k].shape)} in the model"
        for k in own
        if k in state and hasattr(state[k], "shape") and state[k].shape != own[k].shape
    ]
    parts = []
    if missing:
        parts.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        parts.append(f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
    if shapes:
        parts.append("shapes differ: " + "; ".join(shapes[:4]))
    if parts:
        raise CheckpointError(f"{what} does not fit the model: {'; '.join(parts)}")
    model.load_state_dict(state)


def capture_rng() -> dict[str, Any]:
    """This process's RNG states (torch CPU/CUDA, numpy, random) as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
