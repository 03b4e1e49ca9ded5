"""The training loop: outputs of a run, exact resume, evaluation of a checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from deqkit.train.checkpoint import load_checkpoint
from deqkit.train.evaluate import evaluate_checkpoint
from deqkit.train.logging import read_metrics
from deqkit.train.loop import train
from deqkit.train.recipe import load_config


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One uninterrupted 6-step run of the tiny recipe (shared by the tests below)."""
    import tiny_model

    root = tmp_path_factory.mktemp("full")
    cfg = load_config(tiny_model.write_recipe(root / "tiny.yaml"))
    summary = train(cfg, root / "run", progress=False)
    return cfg, root / "run", summary


def test_run_directory_contents(full_run):
    cfg, run, summary = full_run
    assert {p.name for p in run.iterdir()} >= {
        "checkpoint.pt",
        "config.yaml",
        "metrics.jsonl",
        "summary.json",
        "trace.json",
    }
    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl", "train")]
    assert steps == [1, 2, 3, 4, 5, 6]
    record = read_metrics(run / "metrics.jsonl", "train")[0]
    assert 1 <= record["fwd_nstep"] <= 8 and 1 <= record["bwd_nstep"] <= 8
    assert record["fwd_residual"] > 0 and 0 <= record["acc"] <= 1
    assert record["lr"] == pytest.approx(1e-2)  # warmup of 1 step: factor 1 at step 0
    evals = read_metrics(run / "metrics.jsonl", "eval")
    assert [(e["step"], e["n"]) for e in evals] == [(3, 360), (6, 360)]
    assert summary["test_acc"] == evals[-1]["acc"]
    assert json.loads((run / "summary.json").read_text()) == summary
    trace = json.loads((run / "trace.json").read_text())
    assert len(trace["trace"]) == 64 and trace["tol"] == pytest.approx(1e-3)
    # A trace row starts at the first residual and ends at the sample's final one.
    assert all(row[n - 1] <= row[0] for row, n in zip(trace["trace"], trace["nstep"], strict=True))
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["step"] == 6 and state["config"] == cfg.to_dict()


def test_resume_equals_uninterrupted_run(full_run, tmp_path):
    cfg, run, _ = full_run
    # Killed after step 4; the last checkpoint is step 3, so the resumed run redoes step 4.
    train(cfg, tmp_path, progress=False, stop_after=4)
    assert load_checkpoint(tmp_path)["step"] == 3
    train(cfg, tmp_path, resume=True, progress=False)
    full, resumed = load_checkpoint(run)["model"], load_checkpoint(tmp_path)["model"]
    assert full.keys() == resumed.keys()
    for key in full:
        assert torch.equal(full[key], resumed[key]), key
    losses = [r["loss"] for r in read_metrics(run / "metrics.jsonl", "train")]
    resumed_losses = [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl", "train")]
    assert resumed_losses == losses  # the log of the redone step was replaced, not duplicated


def test_evaluate_checkpoint_with_capped_solver(full_run):
    _, run, summary = full_run
    result = evaluate_checkpoint(run / "checkpoint.pt")
    assert result["acc"] == pytest.approx(summary["test_acc"])
    capped = evaluate_checkpoint(run / "checkpoint.pt", ["deq.max_iter=2"])
    assert capped["max_iter"] == 2 and capped["fwd_nstep"] <= 2
    assert capped["fwd_residual"] > result["fwd_residual"]


def test_unrolled_pretraining_then_solving(tmp_path):
    import tiny_model

    recipe = tiny_model.write_recipe(
        tmp_path / "tiny.yaml",
        train={"steps": 3, "pretrain_steps": 2, "pretrain_unroll": 3, "eval_every": 0},
    )
    train(load_config(recipe), tmp_path / "run", progress=False)
    records = read_metrics(tmp_path / "run" / "metrics.jsonl", "train")
    assert [r.get("pretrain", False) for r in records] == [True, True, False]
    assert [r["fwd_nstep"] for r in records[:2]] == [3.0, 3.0]
    assert "bwd_nstep" not in records[0] and "bwd_nstep" in records[2]  # no adjoint when unrolled
    final = read_metrics(tmp_path / "run" / "metrics.jsonl", "eval")[-1]
    assert final["fwd_nstep"] > 3  # evaluated by solving again (tol 1e-3 takes ~7 iterations)


def test_model_without_a_deq_layer(tmp_path):
    import tiny_model

    recipe = tiny_model.write_recipe(
        tmp_path / "mlp.yaml", model={"name": "tiny_model:build_mlp"}, train={"steps": 2}
    )
    summary = train(load_config(recipe), tmp_path / "run", progress=False)
    assert "test_fwd_nstep" not in summary and "mean_fwd_nstep" not in summary
    record = read_metrics(tmp_path / "run" / "metrics.jsonl", "train")[0]
    assert "fwd_nstep" not in record and record["loss"] > 0
    assert json.loads((tmp_path / "run" / "trace.json").read_text()) == {}
    from deqkit.plot import plot_run

    assert [p.name for p in plot_run(tmp_path / "run")] == ["training.png", "solver.png"]
