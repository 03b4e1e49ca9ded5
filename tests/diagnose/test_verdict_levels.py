"""The ρ verdict: a model whose solver reaches the fixed point although J_f at z* is not a
contraction is a ``warning`` (not ``unhealthy``) when the forward and the implicit adjoint both
converge, with the numbers behind it; it stays ``unhealthy`` when the solve fails as well.

The model is z = W z + x with W's eigenvalues scaled so that ρ(W) = 1.5: plain iteration
diverges, Anderson (a Krylov method on a linear map) solves it, and the adjoint system
(I − W)ᵀ u = g is solved by the same Anderson. ρ is compared with a dense eigen-solve."""

from __future__ import annotations

import pytest
import torch
from linear_deq import Fit, Linear, vectors, weight

from deqkit.diagnose import DiagnoseOptions, diagnose, format_table

OPTIONS = DiagnoseOptions(solvers=("fixed_point", "anderson"), max_iter=(8, 60), rho_iter=200)


def test_converged_with_rho_above_one_is_a_warning_with_its_numbers():
    w = weight(1.5)
    dense = torch.linalg.eigvals(w).abs().max().item()
    report = diagnose(Linear(w), Fit({}), vectors(), OPTIONS)
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
    report = diagnose(Linear(weight(1.5), backward="phantom"), Fit({}), vectors(), OPTIONS)
    v = report["verdict"]
    assert v["status"] == "warning", v
    assert "justification assumes rho < 1" in v["warnings"][0]
    assert "implicit gradient is valid" not in v["warnings"][0]


def test_rho_above_one_and_no_convergence_is_unhealthy():
    # Anderson cannot solve the 6-d linear system in 3 iterations: the forward fails too.
    model = Linear(weight(1.5), max_iter=3)
    report = diagnose(model, Fit({}), vectors(), OPTIONS)
    v = report["verdict"]
    assert v["status"] == "unhealthy" and v["warnings"] == []
    assert any("spectral radius >= 1 for 100%" in p for p in v["problems"])


@pytest.mark.parametrize("rho, status", [(0.6, "healthy"), (1.5, "warning")])
def test_the_level_follows_rho_alone_when_everything_converges(rho, status):
    options = DiagnoseOptions(solvers=("anderson",), max_iter=(60,), rho_iter=200)
    report = diagnose(Linear(weight(rho)), Fit({}), vectors(), options)
    assert report["at_budget"]["fwd_converged"] == 1.0
    assert report["verdict"]["status"] == status, report["verdict"]
