"""The stabilisation toolkit set from a recipe changes what a training step computes: each term
shows up in the per-step record and moves the loss or the iteration counts."""

from __future__ import annotations

import json

import pytest
import torch
import toy_tasks

from deqkit.train.errors import RunError
from deqkit.train.logging import read_metrics
from deqkit.train.loop import train
from deqkit.train.recipe import parse

QUIET = {"eval_every": 0, "checkpoint_every": 0, "tensorboard": False}


def _records(tmp_path, name="run", **sections) -> list[dict]:
    train_section = {"steps": 4, **QUIET, **sections.pop("train", {})}
    cfg = parse(toy_tasks.recipe("regression", train=train_section, **sections))
    train(cfg, tmp_path / name, progress=False)
    return read_metrics(tmp_path / name / "metrics.jsonl", "train")


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return _records(tmp_path_factory.mktemp("plain"))


def test_jacobian_penalty_with_a_rising_weight(tmp_path, plain):
    loss = {"jac_weight": 1.0, "jac_weight_step": 0.5, "jac_weight_every": 2}
    records = _records(tmp_path, deq={"jac_reg_prob": 1.0, "jac_reg_vecs": 2}, loss=loss)
    assert [r["jac_weight"] for r in records] == [1.0, 1.0, 1.5, 1.5]
    assert all(r["jac"] > 0 for r in records) and "jac" not in plain[0]
    first = records[0]
    assert first["loss"] == pytest.approx(first["task"] + first["jac"], rel=1e-5)
    assert first["task"] == pytest.approx(plain[0]["task"], rel=1e-5)  # same batch, same model


def test_fixed_point_correction_supervises_sampled_states(tmp_path, plain):
    records = _records(tmp_path, deq={"n_states": 3}, loss={"fpc_gamma": 0.5})
    first = records[0]
    assert first["task_final"] == pytest.approx(plain[0]["task"], rel=1e-5)
    assert first["task"] > first["task_final"]  # the earlier states add their weighted losses


def test_skip_deq_initialiser_loss(tmp_path):
    records = _records(tmp_path, model={"skip": True}, loss={"skip_weight": 2.0})
    first = records[0]
    assert first["skip"] > 0
    assert first["loss"] == pytest.approx(first["task"] + 2.0 * first["skip"], rel=1e-5)


def test_random_budget_delta(tmp_path):
    deq = {"tol": 1e-12, "max_iter": 6}  # never converges: every sample uses its whole budget
    records = _records(tmp_path, deq=deq, train={"steps": 8, "budget_delta": 3})
    budgets = [r["max_iter"] for r in records]
    assert len(set(budgets)) > 1 and all(3 <= b <= 9 for b in budgets)
    assert [r["fwd_nstep"] for r in records] == [float(b) for b in budgets]
    again = _records(tmp_path, "again", deq=deq, train={"steps": 8, "budget_delta": 3})
    assert [r["max_iter"] for r in again] == budgets  # drawn from (seed, step): resumable


def test_bf16_autocast_changes_the_arithmetic(tmp_path, plain):
    records = _records(tmp_path, train={"precision": "bf16"})
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    assert records[0]["loss"] != plain[0]["loss"]
    assert records[0]["loss"] == pytest.approx(plain[0]["loss"], rel=0.05)


def test_warm_starts_cut_the_forward_iterations(tmp_path):
    # The whole training set in every batch, so each sample comes back at every step.
    data = {"batch_size": 256}
    cold = _records(tmp_path, "cold", data=data, train={"steps": 4})
    warm = _records(tmp_path, "warm", data=data, train={"steps": 4, "warm_start": True})
    assert warm[0]["fwd_nstep"] == cold[0]["fwd_nstep"]
    assert warm[-1]["fwd_nstep"] < 0.8 * cold[-1]["fwd_nstep"]


def test_threads_are_recorded(tmp_path):
    _records(tmp_path, train={"steps": 1, "threads": 1})
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["threads"] == 1


def test_nonfinite_loss_stops_and_names_the_last_good_checkpoint(tmp_path):
    train_section = {"steps": 30, "checkpoint_every": 2, "eval_every": 0, "tensorboard": False}
    cfg = parse(toy_tasks.recipe("regression", optim={"lr": 1e30}, train=train_section))
    with pytest.raises(RunError) as err:
        train(cfg, tmp_path / "run", progress=False)
    text = str(err.value)
    assert "non-finite" in text and "Last good checkpoint" in text and "step" in text
    summary = tmp_path / "run" / "summary.json"
    assert not summary.exists()
    skip = {**train_section, "on_nonfinite": "skip", "max_skips": 3}
    cfg = parse(toy_tasks.recipe("regression", optim={"lr": 1e30}, train=skip))
    with pytest.raises(RunError, match="too many in a row"):
        train(cfg, tmp_path / "skip", progress=False)
    records = read_metrics(tmp_path / "skip" / "metrics.jsonl", "train")
    assert sum(r.get("skipped", False) for r in records) == 3


def test_diverging_solver_stops_the_run(tmp_path):
    raw = toy_tasks.recipe("regression", train={"steps": 3, **QUIET})
    raw["model"] = {"name": "toy_tasks:build_exploding"}
    with pytest.raises(RunError, match="step 1: non-finite training .*solver status DIVERGED"):
        train(parse(raw), tmp_path / "run", progress=False)


@pytest.mark.slow
def test_compiled_cell_trains_like_the_eager_one(tmp_path, plain):
    records = _records(tmp_path, train={"compile": True})
    assert records[0]["loss"] == pytest.approx(plain[0]["loss"], rel=1e-4)
