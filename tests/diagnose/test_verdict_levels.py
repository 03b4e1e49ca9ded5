"""The ρ verdict: a model whose solver reaches the fixed point although J_f at z* is not a
contraction is a ``warning`` (not ``unhealthy``) when the forward and the implicit adjoint both
converge, with the numbers behind it; it stays ``unhealthy`` when the solve fails as well.

The model is z = W z + x with W's eigenvalues scaled so that ρ(W) = 1.5: plain iteration
diverges, Anderson (a Krylov method on a linear map) solves it, and the adjoint system
(I − W)ᵀ u = g is solved by the same Anderson. ρ is compared with a dense eigen-solve."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchmetrics import MeanSquaredError

import deqkit as dk
from deqkit.diagnose import DiagnoseOptions, diagnose, format_table
from deqkit.train.task import Best, Task


class Vectors:
    def __init__(self, n=24):
        self.x = torch.randn(n, 6, generator=torch.Generator().manual_seed(1)).double()

    def __len__(self):
        return len(self.x)

    def batch(self, index, generator=None):
        return self.x[index], self.x[index].sum(1, keepdim=True)


class Fit(Task):
    name = "fit"
    best = Best("mse", "min")

    def criterion(self, output, targets):
        return nn.functional.mse_loss(output, targets)

    def metrics(self):
        return {"mse": MeanSquaredError()}


def _weight(rho: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    v = torch.eye(6, dtype=torch.float64) + 0.3 * torch.randn(6, 6, generator=g).double()
    eig = rho * torch.tensor([1.0, -0.6, 0.5, 0.4, -0.3, 0.1], dtype=torch.float64)
    return v @ torch.diag(eig) @ torch.linalg.inv(v)


class Linear(nn.Module):
    def __init__(self, weight, solver="anderson", backward="implicit", max_iter=60):
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.deq = dk.DEQ(
            lambda z, x: z @ self.weight.T + x,
            solver=solver,
            backward=backward,
            tol=1e-6,
            max_iter=max_iter,
            on_failure="ignore",
        )
        self.head = nn.Linear(len(weight), 1).double()

    def forward(self, x):
        z, sol = self.deq(x)
        return self.head(z), sol


OPTIONS = DiagnoseOptions(solvers=("fixed_point", "anderson"), max_iter=(8, 60), rho_iter=200)


def test_converged_with_rho_above_one_is_a_warning_with_its_numbers():
    weight = _weight(1.5)
    dense = torch.linalg.eigvals(weight).abs().max().item()
    report = diagnose(Linear(weight), Fit({}), Vectors(), OPTIONS)
    assert report["at_budget"]["fwd_converged"] == 1.0
    assert report["adjoint"]["implicit"] and report["adjoint"]["converged"] == 1.0
    rho = report["spectral_radius"]
    assert rho["below_1"] == 0.0 and abs(rho["median"] - dense) < 1e-3
    picard = [r for r in report["sweep"] if r["solver"] == "fixed_point"]
    assert [r["fwd_converged"] for r in picard] == [0.0, 0.0]  # plain iteration diverges
    v = report["verdict"]
    assert v["status"] == "warning" and v["problems"] == [], v
    (text,) = v["warnings"]
    assert "spectral radius >= 1 for 100% of samples (median 1.500" in text
    assert "anderson reaches tol 1e-06 for 100.0% of samples at the eval budget of 60" in text
    assert "plain fixed-point iteration: 0.0% at 60" in text
    assert "the adjoint solve converges for 100.0%" in text and "implicit gradient is valid" in text
    assert any("Jacobian regularisation" in a for a in v["advice"])
    assert format_table(report).splitlines()[-3].startswith("warning: converges, but not by")


def test_rho_above_one_with_an_approximate_gradient_says_so():
    report = diagnose(Linear(_weight(1.5), backward="phantom"), Fit({}), Vectors(), OPTIONS)
    v = report["verdict"]
    assert v["status"] == "warning", v
    assert "justification assumes rho < 1" in v["warnings"][0]
    assert "implicit gradient is valid" not in v["warnings"][0]


def test_rho_above_one_and_no_convergence_is_unhealthy():
    # Anderson cannot solve the 6-d linear system in 3 iterations: the forward fails too.
    model = Linear(_weight(1.5), max_iter=3)
    report = diagnose(model, Fit({}), Vectors(), OPTIONS)
    v = report["verdict"]
    assert v["status"] == "unhealthy" and v["warnings"] == []
    assert any("spectral radius >= 1 for 100%" in p for p in v["problems"])


@pytest.mark.parametrize("rho, status", [(0.6, "healthy"), (1.5, "warning")])
def test_the_level_follows_rho_alone_when_everything_converges(rho, status):
    options = DiagnoseOptions(solvers=("anderson",), max_iter=(60,), rho_iter=200)
    report = diagnose(Linear(_weight(rho)), Fit({}), Vectors(), options)
    assert report["at_budget"]["fwd_converged"] == 1.0
    assert report["verdict"]["status"] == status, report["verdict"]
