"""``deqkit diagnose``: a contractive linear DEQ is healthy with ρ equal to the dense eigen-solve,
a non-contractive one is reported with advice, the CLI agrees with the function API, and every
sweep row carries the task's metric (classification, regression, character LM)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tiny_model
import torch
import toy_tasks
from linear_deq import Fit, Linear, vectors, weight

from deqkit.cli import main
from deqkit.diagnose import DiagnoseOptions, diagnose, diagnose_checkpoint, write_report

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"


OPTIONS = DiagnoseOptions(solvers=("fixed_point",), max_iter=(5, 60), rho_iter=200)


def test_contractive_model_is_healthy_and_rho_matches_eigvals(tmp_path):
    w = weight(0.6)
    report = diagnose(Linear(w, "fixed_point"), Fit({}), vectors(), OPTIONS)
    dense = torch.linalg.eigvals(w).abs().max().item()
    assert report["at_budget"]["fwd_converged"] == 1.0
    assert report["at_convergence"]["fwd_converged"] == 1.0
    assert report["sweep"][0]["fwd_converged"] == 0.0  # 5 iterations cannot reach 1e-6
    rho = report["spectral_radius"]
    assert rho["n"] == 24 and rho["below_1"] == 1.0
    assert max(abs(r - dense) for r in rho["per_sample"]) < 1e-3
    assert report["adjoint"]["implicit"] and report["adjoint"]["converged"] == 1.0
    assert report["verdict"]["status"] == "healthy", report["verdict"]
    files = write_report(report, tmp_path)
    assert {p.name for p in files} == {"diagnose.json", "diagnose.png", "diagnose_rho.png"}
    assert json.loads((tmp_path / "diagnose.json").read_text())["verdict"]["status"] == "healthy"


def test_non_contractive_model_reports_failure_and_advice():
    w = weight(1.5)
    report = diagnose(Linear(w, "fixed_point"), Fit({}), vectors(), OPTIONS)
    dense = torch.linalg.eigvals(w).abs().max().item()
    assert report["at_budget"]["fwd_converged"] == 0.0
    assert abs(report["spectral_radius"]["median"] - dense) < 1e-3
    verdict = report["verdict"]
    assert verdict["status"] == "unhealthy"
    text = " ".join(verdict["problems"])
    assert "truncated unroll: 0%" in text and "spectral radius >= 1" in text
    assert any("Jacobian regularisation" in a for a in verdict["advice"])


def _train(recipe: str, out: Path, capsys) -> None:
    assert main(["train", recipe, "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()


def test_cli_agrees_with_function_api(tmp_path, capsys):
    recipe = tiny_model.write_recipe(tmp_path / "tiny.yaml")
    run = tmp_path / "run"
    _train(recipe, run, capsys)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), str(SRC), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, "-m", "deqkit", "diagnose", str(run), "--solvers", "anderson"]
    cmd += ["--max-iter", "2,8", "--max-samples", "32"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "spectral radius of J_f" in done.stdout and "healthy" in done.stdout
    cli = json.loads((run / "diagnose.json").read_text())
    options = DiagnoseOptions(solvers=("anderson",), max_iter=(2, 8), max_samples=32)
    api = diagnose_checkpoint(run, options=options)
    for a, b in zip(cli["sweep"], api["sweep"], strict=True):
        assert (a["max_iter"], a["n"]) == (b["max_iter"], b["n"]) == (a["max_iter"], 32)
        for key in ("acc", "fwd_converged", "fwd_nstep", "loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6)
    assert cli["spectral_radius"]["per_sample"] == pytest.approx(
        api["spectral_radius"]["per_sample"], rel=1e-4
    )
    assert cli["verdict"] == api["verdict"]
    assert (run / "diagnose.png").is_file()


@pytest.mark.parametrize("kind, metric", [("regression", "mse"), ("chars", "bpc")])
def test_task_metric_at_each_budget(kind, metric, tmp_path, capsys):
    train = {"steps": 4, "eval_every": 4, "checkpoint_every": 4, "log_every": 2}
    recipe = toy_tasks.write(tmp_path / f"{kind}.yaml", kind, train=train)
    _train(recipe, tmp_path / "run", capsys)
    options = DiagnoseOptions(solvers=("fixed_point", "anderson"), max_iter=(1, 4), probe_samples=8)
    report = diagnose_checkpoint(tmp_path / "run", options=options)
    assert report["metric"] == metric
    rows = report["sweep"] + [report["at_budget"], report["at_convergence"]]
    assert [(r["solver"], r["max_iter"]) for r in report["sweep"]] == [
        ("fixed_point", 1),
        ("fixed_point", 4),
        ("anderson", 1),
        ("anderson", 4),
    ]
    for row in rows:
        assert torch.isfinite(torch.tensor(row[metric])), row
        assert row["fwd_nstep"] <= row["max_iter"]
    # one iteration from z0 = 0 is not the equilibrium: the metric must see the budget
    assert report["sweep"][0][metric] != report["at_convergence"][metric]


def test_plot_shows_converged_share_next_to_residuals(tmp_path, monkeypatch):
    import matplotlib.figure

    from deqkit.plot import plot_run

    records = [
        {"kind": "train", "step": s, "loss": 1.0, "fwd_residual": 0.1, "fwd_converged": s / 4}
        for s in (1, 2, 3, 4)
    ] + [{"kind": "eval", "split": "test", "step": 4, "loss": 1.0, "fwd_converged": 0.75}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    figures = {}
    monkeypatch.setattr(
        matplotlib.figure.Figure, "savefig", lambda fig, path, **kw: figures.update({path: fig})
    )
    plot_run(tmp_path)
    axes = figures[tmp_path / "solver.png"].axes
    (ax,) = [a for a in axes if "converged" in a.get_ylabel()]
    lines = {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}
    assert lines == {"train (batch)": [0.25, 0.5, 0.75, 1.0], "test": [0.75]}
