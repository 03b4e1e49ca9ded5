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


_SOLVER = (
    "fwd_nstep",
    "fwd_residual",
    "fwd_converged",
    "bwd_nstep",
    "bwd_residual",
    "bwd_converged",
)
_NOT_METRICS = {"kind", "step", "split", "n", "time", "lr", "pretrain", "skipped", "reason"}


def _series(records: list[dict], key: str) -> tuple[list, list]:
    pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
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


def _phases(records: list[dict]) -> list[list[dict]]:
    # Unrolled pretraining and solving are separate curves: smoothing across the switch would
    # turn its step change into a ramp.
    pre = [r for r in records if r.get("pretrain")]
    solved = [r for r in records if not r.get("pretrain")]
    return [p for p in (pre, solved) if p]


def _curves(ax, train, evals, key):
    for part in _phases(train):
        steps, values = _series(part, key)
        if values:
            ax.plot(steps, values, color="0.8", lw=0.8)
            ax.plot(steps, _smooth(values, max(1, len(values) // 50)), color="C0")
    ax.plot([], [], color="C0", label=f"train {key}")
    steps, values = _series(evals, key)
    if values:
        split = evals[0].get("split", "eval")
        ax.plot(steps, values, "o-", color="C1", label=f"{split} {key}")
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    _legend(ax)


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend()


def _mark_pretraining(ax, train: list[dict]) -> None:
    pre = [r["step"] for r in train if r.get("pretrain")]
    if pre:
        ax.axvspan(0, max(pre), color="0.9", label="unrolled pretraining (not solver steps)")


def _deq_settings(run: Path) -> dict:
    import yaml

    path = run / "config.yaml"
    try:
        return (yaml.safe_load(path.read_text()) or {}).get("deq") or {} if path.is_file() else {}
    except yaml.YAMLError:
        return {}


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write ``training.png`` (loss and every task metric), ``solver.png`` and, when
    ``trace.json`` exists, ``residuals.png``; needs only ``metrics.jsonl``.

    Args:
        run_dir: a directory written by ``deqkit train``.

    Returns:
        The paths of the PNG files written (the run's ``pictures/`` too, if any).

    >>> plot_run("/nonexistent-run")
    Traceback (most recent call last):
    ...
    deqkit.train.errors.RunError: /nonexistent-run has no metrics.jsonl; is it a deqkit run directory?
    """  # noqa: E501
    from .train.errors import RunError

    run = Path(run_dir)
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        raise RunError(f"{run} has no metrics.jsonl; is it a deqkit run directory?")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = read_metrics(metrics, "train")
    evals = read_metrics(metrics, "eval")
    keys = ["loss"]
    for record in evals or train:
        keys += [
            k
            for k, v in record.items()
            if k not in _NOT_METRICS
            and k not in _SOLVER
            and k not in keys
            and isinstance(v, (int, float))
            and not isinstance(v, bool)
        ]
    keys = keys[:6]
    written = []

    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        _curves(ax, train, evals, key)
    fig.suptitle(f"{run.name}: loss and metrics")
    fig.tight_layout()
    written.append(run / "training.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    deq = _deq_settings(run)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    for ax in axes:
        _mark_pretraining(ax, train)
    for key, label, color in (("fwd_nstep", "forward", "C0"), ("bwd_nstep", "backward", "C1")):
        labelled = False
        for part in _phases(train):
            steps, values = _series(part, key)
            if values:
                smooth = _smooth(values, max(1, len(values) // 50))
                axes[0].plot(steps, smooth, color=color, label=None if labelled else label)
                labelled = True
    axes[0].set_ylabel("iterations (batch mean)")
    for key, label, color in (
        ("fwd_residual", "forward", "C0"),
        ("bwd_residual", "backward", "C1"),
    ):
        steps, values = _series(train, key)
        if values:
            axes[1].semilogy(steps, values, color=color, label=label)
    mode = deq.get("stop_mode", "rel")
    if isinstance(deq.get("tol"), (int, float)):
        axes[1].axhline(deq["tol"], color="k", ls="--", lw=1, label=f"forward tol {deq['tol']:g}")
    axes[1].set_ylabel(f"final {mode} residual (batch mean)")
    # A DEQ result counts only at an equilibrium: the share of samples within tol, next to the
    # residuals (train: per logged step, forward and adjoint; eval: each evaluation).
    solved = [r for r in train if not r.get("pretrain")]
    for key, label, color in (
        ("fwd_converged", "train (batch)", "C0"),
        ("bwd_converged", "train adjoint (batch)", "C2"),
    ):
        steps, values = _series(solved, key)
        if values:
            axes[2].plot(steps, values, color=color, label=label)
    steps, values = _series(evals, "fwd_converged")
    if values:
        split = evals[0].get("split", "eval")
        axes[2].plot(steps, values, "o-", color="C1", label=split)
    axes[2].set_ylim(-0.02, 1.02)
    axes[2].set_ylabel("share of samples within tol (converged)")
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
        ax.set_title(f"{run.name}: forward residual, test samples")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        written.append(run / "residuals.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    written += sorted((run / "pictures").glob("*.png"))
    return written
