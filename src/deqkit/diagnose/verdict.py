"""The plain verdict of a diagnosis: healthy, warning or unhealthy, why, and what to try, with
the numbers."""

from __future__ import annotations

import math

__all__ = ["CONVERGE_SHARE", "metric_noise", "verdict"]

#: A real equilibrium: at least this share of samples reach the tolerance at the eval budget.
CONVERGE_SHARE = 0.9

_RHO_FIX = (
    "Jacobian regularisation (loss.jac_weight, deq.jac_reg_prob) brings rho(J_f) below 1, "
    "which makes the fixed point attracting for plain iteration too"
)
_RHO_KEEP = (
    "keep an accelerated solver (anderson or broyden) for training and evaluation, and re-run "
    "diagnose after changing the solver, the budget or the data"
)

_FIXES = (
    "consider Jacobian regularisation (loss.jac_weight with deq.jac_reg_prob), a larger "
    "budget (deq.max_iter / deq.eval_max_iter), or phantom gradients (deq.backward=phantom)"
)


def metric_noise(value: float | None, n: int, mode: str = "max") -> float | None:
    """Two standard errors of a metric over ``n`` samples: binomial for a share in [0, 1]
    where higher is better (accuracy, F1), else 1% of its size (a rough scale for losses and
    errors; a DEQ at convergence should not move them more).

    >>> round(metric_noise(0.9, 400), 4), metric_noise(0.5, 400, mode="min")
    (0.03, 0.005)
    """
    if value is None or not math.isfinite(value) or n < 1:
        return None
    if mode == "max" and 0.0 <= value <= 1.0:
        return 2.0 * math.sqrt(max(value * (1.0 - value), 1.0 / n) / n)
    return 0.01 * abs(value)


def verdict(report: dict) -> dict:
    """``{"status", "summary", "problems", "warnings", "advice"}`` from a
    :func:`deqkit.diagnose.diagnose` report (its ``at_budget``, ``at_convergence``, ``gap``,
    ``spectral_radius`` and ``adjoint`` entries; ``at_train_budget`` and ``train_gap`` where
    present).

    ``unhealthy``: the forward solve reaches the tolerance for < 90% of samples at the training
    budget (the implicit gradient's premise), the eval budget (the reported number's) or 4× the
    eval budget, or the implicit adjoint converges for < 90%, or the metric moves beyond its
    noise on the way to convergence. ``warning``: none of these, but ρ(J_f) at z* >= 1 for more
    than 10% of samples: the model's (accelerated) solver finds a fixed point that plain
    iteration is not attracted to. The metric is the equilibrium's, and with a converged adjoint
    the implicit gradient is the exact one ((I − J_f)ᵀ is invertible wherever the adjoint
    system is solved), but the fixed point is not locally attracting, so another solver, budget
    or input distribution may miss it. ``healthy``: neither.

    >>> v = verdict({"at_train_budget": {"fwd_converged": 0.0, "max_iter": 8},
    ...              "at_budget": {"fwd_converged": 0.98, "max_iter": 32},
    ...              "at_convergence": {"fwd_converged": 1.0, "max_iter": 128}, "tol": 1e-3})
    >>> v["status"], v["problems"][0][:60]
    ('unhealthy', 'trained as a truncated unroll: 0% of samples reach tol 0.001')
    >>> verdict({"at_budget": {"fwd_converged": 1.0, "max_iter": 8},
    ...          "at_convergence": {"fwd_converged": 1.0, "max_iter": 32}, "tol": 1e-3})["summary"]
    'healthy: a real equilibrium (100% converge at the eval budget of 8)'
    >>> v = verdict({"at_budget": {"fwd_converged": 0.99, "max_iter": 16},
    ...              "at_convergence": {"fwd_converged": 1.0, "max_iter": 64}, "tol": 1e-2,
    ...              "solver": "anderson", "spectral_radius": {"median": 1.05, "max": 1.9,
    ...              "below_1": 0.44}, "adjoint": {"implicit": True, "converged": 1.0,
    ...              "nstep": 8.3, "backward": "implicit"}})
    >>> v["status"], v["warnings"][0][:88]
    ('warning', 'converges, but not by contraction: J_f at z* has spectral radius >= 1 for 56% of samples')
    """  # noqa: E501
    problems, advice = [], []
    budget, conv = report["at_budget"], report["at_convergence"]
    share, k = budget.get("fwd_converged"), budget.get("max_iter")
    tol = report.get("tol")
    train = report.get("at_train_budget") or budget
    train_share, train_k = train.get("fwd_converged"), train.get("max_iter")
    if train_share is not None and train_share < CONVERGE_SHARE:
        kind = "trained as a truncated unroll" if train_share < 0.5 else "trained off equilibrium"
        where = "training budget" if train_k != k else "training and eval budget"
        problems.append(
            f"{kind}: {train_share:.0%} of samples reach tol {tol:g} at the {where} of "
            f"{train_k} iterations (need >= {CONVERGE_SHARE:.0%}; the implicit gradient assumes "
            f"a fixed point)"
        )
        advice.append(_FIXES)
    if share is not None and share < CONVERGE_SHARE and (train_k != k or train_share is None):
        kind = "evaluated as a truncated unroll" if share < 0.5 else "not a reliable equilibrium"
        problems.append(
            f"{kind}: {share:.0%} of samples reach tol {tol:g} at the eval budget of {k} "
            f"iterations (need >= {CONVERGE_SHARE:.0%})"
        )
        advice.append(_FIXES)
    share_conv = conv.get("fwd_converged")
    if share_conv is not None and share_conv < CONVERGE_SHARE:
        problems.append(
            f"no equilibrium even with {conv.get('max_iter')} iterations: {share_conv:.0%} converge"
        )
        advice.append(
            "f is not contractive enough to solve: Jacobian regularisation or a smaller "
            "weight scale (weight norm / spectral norm) makes the fixed point reachable"
        )
    rho = report.get("spectral_radius") or {}
    below = rho.get("below_1")
    expanding = below is not None and below < CONVERGE_SHARE
    rho_text = (
        f"J_f at z* has spectral radius >= 1 for {1 - (below or 0.0):.0%} of samples (median "
        f"{_fmt(rho.get('median'))}, max {_fmt(rho.get('max'))})"
    )
    adj = report.get("adjoint") or {}
    if adj.get("implicit") and adj["converged"] < CONVERGE_SHARE:
        problems.append(
            f"the adjoint solve at the training settings ({adj['backward']}) converges for "
            f"{adj['converged']:.0%} of samples (mean {adj['nstep']:.1f} iterations, residual "
            f"{adj['residual']:.1e}): the implicit gradient is inexact"
        )
        advice.append(
            "raise deq.backward_options.max_iter, use phantom gradients, or regularise the Jacobian"
        )
    gap = report.get("gap") or {}
    if gap.get("difference") is not None and gap.get("noise") is not None:
        if abs(gap["difference"]) > gap["noise"]:
            problems.append(
                f"{gap['metric']} moves from {gap['at_budget']:.4f} at the eval budget to "
                f"{gap['at_convergence']:.4f} at convergence (noise ~{gap['noise']:.4f}): the "
                f"reported number is not the equilibrium's"
            )
    tgap = report.get("train_gap") or {}
    if tgap.get("difference") is not None and tgap.get("noise") is not None:
        if abs(tgap["difference"]) > tgap["noise"] and tgap.get("max_iter") != k:
            problems.append(
                f"{tgap['metric']} moves from {tgap['at_budget']:.4f} at the training budget "
                f"to {tgap['at_convergence']:.4f} at convergence (noise ~{tgap['noise']:.4f}): "
                f"the model learned its truncated solve, not its fixed point"
            )
            advice.append(_FIXES)
    if problems and expanding:
        problems.append(rho_text + ": plain iteration diverges locally")
        advice.append(_RHO_FIX)
    advice = list(dict.fromkeys(advice))
    if problems:
        summary = "unhealthy: " + "; ".join(problems)
        return _result("unhealthy", summary, problems, [], advice)
    if expanding:
        warning = _not_contractive(report, rho_text)
        return _result("warning", "warning: " + warning, [], [warning], [_RHO_KEEP, _RHO_FIX])
    parts = [f"{share:.0%} converge at the eval budget of {k}"] if share is not None else []
    if train_k != k and train_share is not None:
        parts.append(f"{train_share:.0%} at the training budget of {train_k}")
    if rho.get("median") is not None:
        parts.append(f"median rho(J_f) {rho['median']:.3f}")
    if gap.get("difference") is not None:
        parts.append(f"{gap['metric']} gap to convergence {gap['difference']:+.4f}")
    summary = "healthy: a real equilibrium (" + ", ".join(parts) + ")"
    return _result("healthy", summary, [], [], [])


def _result(status: str, summary: str, problems: list, warnings: list, advice: list) -> dict:
    return {"status": status, "summary": summary, "problems": problems, "warnings": warnings,
            "advice": advice}  # fmt: skip


def _fmt(value: float | None) -> str:
    return f"{value:.3f}" if isinstance(value, float) and math.isfinite(value) else "-"


def _share(row: dict) -> str:
    value = row.get("fwd_converged")
    return f"{value:.1%}" if isinstance(value, float) else "-"


def _not_contractive(report: dict, rho_text: str) -> str:
    """The warning for a model that reaches its fixed point (forward and adjoint) although J_f
    at z* is not a contraction there, with the numbers: the model's solver and its converged
    shares, plain iteration's share where the sweep has it, and the adjoint."""
    budget, conv = report["at_budget"], report["at_convergence"]
    solver = report.get("solver", "its solver")
    text = (
        f"converges, but not by contraction: {rho_text}; {solver} reaches tol "
        f"{report.get('tol', float('nan')):g} for {_share(budget)} of samples at the eval "
        f"budget of {budget.get('max_iter')} ({_share(conv)} at {conv.get('max_iter')})"
    )
    picard = [r for r in report.get("sweep", []) if r.get("solver") == "fixed_point"]
    if picard and solver != "fixed_point":
        last = max(picard, key=lambda r: r["max_iter"])
        text += f"; plain fixed-point iteration: {_share(last)} at {last['max_iter']}"
    adj = report.get("adjoint") or {}
    if adj.get("implicit"):
        text += (
            f"; the adjoint solve converges for {adj['converged']:.1%} ({adj['nstep']:.1f} "
            f"iterations), so the implicit gradient is valid"
        )
    elif adj:
        text += (
            f"; the {adj.get('backward')} gradient replaces (I - J_f)^-1 by a truncated series "
            f"whose justification assumes rho < 1"
        )
    return text + "; the fixed point is not locally attracting, so another solver may miss it"
