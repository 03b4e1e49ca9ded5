"""The trainer logs the convergence rate (share of samples within the tolerance): per training
step for the forward and the adjoint solve, per evaluation, in metrics.jsonl, TensorBoard and the
summary; ``deqkit plot`` draws it next to the residuals."""

from __future__ import annotations

import pytest
import tiny_model

from deqkit.train.evaluate import evaluate_checkpoint
from deqkit.train.logging import read_metrics
from deqkit.train.loop import train
from deqkit.train.recipe import load_config

FOUR_STEPS = {"steps": 4, "eval_every": 2, "checkpoint_every": 2, "log_every": 1}


def _run(tmp_path, **sections):
    cfg = load_config(tiny_model.write_recipe(tmp_path / "tiny.yaml", **sections))
    summary = train(cfg, tmp_path / "run", progress=False)
    metrics = tmp_path / "run" / "metrics.jsonl"
    return summary, read_metrics(metrics, "train"), read_metrics(metrics, "eval")


def test_rates_logged_per_step_and_per_evaluation(tmp_path):
    summary, steps, evals = _run(tmp_path, train=FOUR_STEPS)
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    for record in steps:
        assert 0.0 <= record["fwd_converged"] <= 1.0 and 0.0 <= record["bwd_converged"] <= 1.0
        # A share of the 16 samples of the batch (every rank's share on one process).
        assert (16 * record["fwd_converged"]) == pytest.approx(round(16 * record["fwd_converged"]))
    assert [e["step"] for e in evals] == [2, 4]
    assert all(0.0 <= e["fwd_converged"] <= 1.0 for e in evals)
    # The summary averages the steps' rates and reports the final test evaluation's.
    for key in ("fwd_converged", "bwd_converged"):
        mean = sum(r[key] for r in steps) / len(steps)
        assert summary[f"mean_{key}"] == pytest.approx(mean, rel=1e-12)
    assert summary["test_fwd_converged"] == evals[-1]["fwd_converged"]
    # The logged evaluation rate is the checkpoint's, recomputed from scratch.
    again = evaluate_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert again["fwd_converged"] == pytest.approx(evals[-1]["fwd_converged"], abs=1e-12)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(tmp_path / "run")).Reload()
    assert {"train/fwd_converged", "train/bwd_converged", "test/fwd_converged"} <= set(
        board.Tags()["scalars"]
    )
    logged = [e.value for e in board.Scalars("train/fwd_converged")]
    assert logged == pytest.approx([r["fwd_converged"] for r in steps])
    assert [e.value for e in board.Scalars("test/fwd_converged")] == pytest.approx(
        [e["fwd_converged"] for e in evals]
    )


def test_rates_follow_each_solves_tolerance(tmp_path):
    # Forward tolerance met at once (rel residual <= 2 always holds), adjoint unreachable in
    # 2 iterations: the two rates are separate measurements, 1 and 0.
    deq = {"tol": 2.0, "backward_options": {"tol": 1e-12, "max_iter": 2}}
    summary, steps, evals = _run(tmp_path, deq=deq, train=FOUR_STEPS)
    assert [r["fwd_converged"] for r in steps] == [1.0] * 4
    assert [r["bwd_converged"] for r in steps] == [0.0] * 4
    assert [e["fwd_converged"] for e in evals] == [1.0, 1.0]
    assert summary["mean_fwd_converged"] == 1.0 and summary["mean_bwd_converged"] == 0.0


def test_plot_draws_forward_and_adjoint_rates(tmp_path, monkeypatch):
    import json

    import matplotlib.figure

    from deqkit.plot import plot_run

    solver = {"fwd_residual": 0.1, "bwd_residual": 0.01}
    records = [
        {"kind": "train", "step": s, "loss": 1.0, **solver, "fwd_converged": s / 4,
         "bwd_converged": 1 - s / 4}
        for s in (1, 2, 3, 4)
    ]  # fmt: skip
    records.append({"kind": "eval", "split": "test", "step": 4, "loss": 1.0, "fwd_converged": 0.75})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    figures = {}
    monkeypatch.setattr(
        matplotlib.figure.Figure, "savefig", lambda fig, path, **kw: figures.update({path: fig})
    )
    plot_run(tmp_path)
    axes = figures[tmp_path / "solver.png"].axes
    (ax,) = [a for a in axes if "converged" in a.get_ylabel()]
    lines = {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}
    assert lines == {
        "train (batch)": [0.25, 0.5, 0.75, 1.0],
        "train adjoint (batch)": [0.75, 0.5, 0.25, 0.0],
        "test": [0.75],
    }
    # The rates are solver statistics, not task metrics: training.png leaves them out.
    titles = [a.get_ylabel() for a in figures[tmp_path / "training.png"].axes]
    assert titles == ["loss"]
