"""``diagnose`` judges the training budget too: a model that reaches its fixed point only at the
eval budget was trained on truncated solves (its implicit gradient was inexact), and says so."""

from __future__ import annotations

import json

import torch
from torch import nn

import deqkit as dk
from deqkit.diagnose import DiagnoseOptions, diagnose, format_table, write_report
from deqkit.train.task import Classification


class Blobs:
    def __len__(self):
        return 16

    def batch(self, index, generator=None):
        return torch.eye(4)[index % 4], index % 4


class Model(nn.Module):
    def __init__(self, max_iter: int, eval_max_iter: int):
        super().__init__()
        self.deq = dk.DEQ(
            lambda z, x: 0.5 * torch.tanh(z) + x,
            tol=1e-4,
            max_iter=max_iter,
            eval_max_iter=eval_max_iter,
            on_failure="ignore",
        )

    def forward(self, x):
        z, sol = self.deq(x)
        return 3 * z, sol


OPTIONS = DiagnoseOptions(solvers=("fixed_point",), max_iter=(2, 30), rho_iter=10)


def test_unconverged_training_budget_is_unhealthy(tmp_path):
    report = diagnose(Model(max_iter=2, eval_max_iter=30), Classification({"num_classes": 4}),
                      Blobs(), OPTIONS)  # fmt: skip
    assert report["at_train_budget"]["max_iter"] == 2
    assert report["at_train_budget"]["fwd_converged"] == 0.0
    assert report["at_budget"]["fwd_converged"] == 1.0
    assert report["train_gap"]["max_iter"] == 2 and report["gap"]["max_iter"] == 30
    verdict = report["verdict"]
    assert verdict["status"] == "unhealthy"
    assert verdict["problems"][0].startswith("trained as a truncated unroll: 0% of samples")
    assert "training budget of 2 iterations" in verdict["problems"][0]
    assert not any("eval budget" in p for p in verdict["problems"])
    assert any("Jacobian regularisation" in a for a in verdict["advice"])
    table = format_table(report)
    assert "training budget (2), eval budget (30)" in table
    assert report["spectral_radius"]["seconds"] >= 0 and report["adjoint"]["seconds"] >= 0
    write_report(report, tmp_path)
    saved = json.loads((tmp_path / "diagnose.json").read_text())
    assert saved["at_train_budget"]["fwd_converged"] == 0.0


def test_converged_training_budget_is_healthy():
    report = diagnose(Model(max_iter=30, eval_max_iter=60), Classification({"num_classes": 4}),
                      Blobs(), OPTIONS)  # fmt: skip
    assert report["at_train_budget"]["fwd_converged"] == 1.0
    assert report["verdict"]["status"] == "healthy", report["verdict"]
    assert "100% at the training budget of 30" in report["verdict"]["summary"]
