"""The plain verdict of a diagnosis: healthy or not, why, and what to try, with the numbers."""

from __future__ import annotations

import math

__all__ = ["CONVERGE_SHARE", "metric_noise", "verdict"]

#: A real equilibrium: at least this share of samples reach the tolerance at the eval budget.
CONVERGE_SHARE = 0.9

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
    """``{"status": "healthy"|"unhealthy", "summary", "problems", "advice"}`` from a
    :func:`deqkit.diagnose.diagnose` report (its ``at_budget``, ``at_convergence``, ``gap``,
    ``spectral_radius`` and ``adjoint`` entries; ``at_train_budget`` and ``train_gap`` where
    present). The forward solve must reach the tolerance for >= 90% of samples at the training
    budget (the implicit gradient's premise) and at the eval budget (the reported number's).

    >>> v = verdict({"at_train_budget": {"fwd_converged": 0.0, "max_iter": 8},
    ...              "at_budget": {"fwd_converged": 0.98, "max_iter": 32},
    ...              "at_convergence": {"fwd_converged": 1.0, "max_iter": 128}, "tol": 1e-3})
    >>> v["status"], v["problems"][0][:60]
    ('unhealthy', 'trained as a truncated unroll: 0% of samples reach tol 0.001')
    >>> verdict({"at_budget": {"fwd_converged": 1.0, "max_iter": 8},
    ...          "at_convergence": {"fwd_converged": 1.0, "max_iter": 32}, "tol": 1e-3})["summary"]
    'healthy: a real equilibrium (100% converge at the eval budget of 8)'
    """
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
    if rho.get("median") is not None and rho["median"] >= 1.0:
        problems.append(
            f"J_f at z* has spectral radius >= 1 (median {rho['median']:.3f}, max "
            f"{rho['max']:.3f}; {rho['below_1']:.0%} of samples below 1): plain iteration "
            f"diverges locally"
        )
        advice.append(
            "Jacobian regularisation lowers rho(J_f); Anderson or Broyden may still solve it"
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
    advice = list(dict.fromkeys(advice))
    if problems:
        summary = "unhealthy: " + "; ".join(problems)
        return {"status": "unhealthy", "summary": summary, "problems": problems, "advice": advice}
    parts = [f"{share:.0%} converge at the eval budget of {k}"] if share is not None else []
    if train_k != k and train_share is not None:
        parts.append(f"{train_share:.0%} at the training budget of {train_k}")
    if rho.get("median") is not None:
        parts.append(f"median rho(J_f) {rho['median']:.3f}")
    if gap.get("difference") is not None:
        parts.append(f"{gap['metric']} gap to convergence {gap['difference']:+.4f}")
    summary = "healthy: a real equilibrium (" + ", ".join(parts) + ")"
    return {"status": "healthy", "summary": summary, "problems": [], "advice": []}
