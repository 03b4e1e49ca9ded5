"""PNG plots of a training run: loss/accuracy, solver steps/residuals, residual vs iteration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .train.logging import read_metrics

__all__ = ["field_picture", "plot_run", "side_by_side"]


def side_by_side(*images) -> np.ndarray:
    """Images (H, W) or (H, W, C) with values in [0, 1], clipped, as one RGB (H, W', 3) array
    with a 2-pixel white gap between them.

    >>> import torch
    >>> side_by_side(torch.zeros(4, 3), torch.ones(4, 3, 1)).shape
    (4, 8, 3)
    """
    rows = []
    for image in images:
        a = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image, float)
        a = a[..., None] if a.ndim == 2 else a
        a = np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a[..., :3]
        rows.append(np.clip(a, 0.0, 1.0))
    gap = np.ones((rows[0].shape[0], 2, 3))
    out = [rows[0]]
    for a in rows[1:]:
        out += [gap, a]
    return np.concatenate(out, axis=1)


def field_picture(prediction, target) -> np.ndarray:
    """Magnitude of a predicted vector field (C, H, W) next to the target's, on one scale.

    >>> import torch
    >>> field_picture(torch.zeros(2, 3, 4), torch.ones(2, 3, 4)).shape
    (3, 10, 3)
    """
    mags = [
        np.linalg.norm(np.asarray(t.detach().float().cpu()), axis=0) for t in (prediction, target)
    ]
    scale = max(float(np.nanmax(mags[1])), 1e-12)
    return side_by_side(*(np.nan_to_num(m / scale) for m in mags))


def _series(records: list[dict], key: str) -> tuple[list, list]:
    pts = [(r["step"], r[key]) for r in records if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _smooth(values: list[float], width: int) -> list[float]:
    # A trailing mean keeps the curve aligned with its steps and readable over noisy batches.
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= width:
            acc -= values[i - width]
        out.append(acc / min(i + 1, width))
    return out


def _curves(ax, train, evals, key, label):
    steps, values = _series(train, key)
    if values:
        width = max(1, len(values) // 50)
        ax.plot(steps, values, color="0.8", lw=0.8)
        ax.plot(steps, _smooth(values, width), label=f"train {label}")
    steps, values = _series(evals, key)
    if values:
        split = evals[0].get("split", "eval")
        ax.plot(steps, values, "o-", label=f"{split} {label}")
    ax.set_xlabel("step")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    _legend(ax)


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend()


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write ``training.png``, ``solver.png`` and (if ``trace.json`` exists) ``residuals.png``.

    Args:
        run_dir: a directory written by ``deqkit train`` (needs ``metrics.jsonl``).

    Returns:
        The paths of the PNG files written.

    >>> plot_run("/nonexistent-run")
    Traceback (most recent call last):
    ...
    FileNotFoundError: /nonexistent-run has no metrics.jsonl; is it a deqkit run directory?
    """
    run = Path(run_dir)
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        raise FileNotFoundError(f"{run} has no metrics.jsonl; is it a deqkit run directory?")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = read_metrics(metrics, "train")
    evals = read_metrics(metrics, "eval")
    written = []

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    _curves(axes[0], train, evals, "loss", "loss")
    _curves(axes[1], train, evals, "acc", "accuracy")
    fig.suptitle(f"{run.name}: loss and accuracy")
    fig.tight_layout()
    written.append(run / "training.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("fwd_nstep", "forward"), ("bwd_nstep", "backward")):
        steps, values = _series(train, key)
        if values:
            axes[0].plot(steps, _smooth(values, max(1, len(values) // 50)), label=label)
    axes[0].set_ylabel("solver iterations (batch mean)")
    for key, label in (("fwd_residual", "forward"), ("bwd_residual", "backward")):
        steps, values = _series(train, key)
        if values:
            axes[1].semilogy(steps, values, label=label)
    axes[1].set_ylabel("final residual (batch mean)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        _legend(ax)
    fig.suptitle(f"{run.name}: solver statistics over training")
    fig.tight_layout()
    written.append(run / "solver.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    trace_file = run / "trace.json"
    trace = json.loads(trace_file.read_text()) if trace_file.is_file() else {}
    if trace.get("trace"):
        fig, ax = plt.subplots(figsize=(6, 4))
        rows = trace["trace"]
        for row, n in zip(rows, trace["nstep"], strict=True):
            ax.semilogy(range(1, n + 1), row[:n], color="C0", alpha=0.15, lw=0.8)
        width = max(len(r) for r in rows)
        mean = [sum(r[i] for r in rows) / len(rows) for i in range(width)]
        ax.semilogy(range(1, width + 1), mean, color="C3", lw=2, label="batch mean")
        ax.axhline(trace["tol"], color="k", ls="--", lw=1, label=f"tol {trace['tol']:g}")
        ax.set_xlabel("solver iteration")
        ax.set_ylabel(f"{trace['stop_mode']} residual")
        ax.set_title(f"{run.name}: forward residual, one test batch")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        written.append(run / "residuals.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written
