"""A diagnosis on paper: the text table, ``diagnose.json`` (strict JSON) and the PNGs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["format_table", "strict", "write_report"]


def strict(tree: Any) -> Any:
    """``tree`` with every NaN/Inf float replaced by None (strict JSON has neither).

    >>> strict({"a": [1.0, float("nan")], "b": float("inf")})
    {'a': [1.0, None], 'b': None}
    """
    if isinstance(tree, float):
        return tree if math.isfinite(tree) else None
    if isinstance(tree, dict):
        return {str(k): strict(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [strict(v) for v in tree]
    return tree


def _num(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def format_table(report: dict) -> str:
    """The sweep as a table (solver, budget, metric, converged share, mean iterations and
    residual), then the spectral radius, the adjoint, the gap and the verdict with advice."""
    metric = report["metric"]
    head = f"{'solver':<14}{'max_iter':>9}{metric:>10}{'converged':>11}{'iters':>8}{'residual':>11}"
    lines = [f"tolerance {report['tol']:g} ({report['stop_mode']}), n={report['n']}", head]
    own = [report[k] for k in ("at_train_budget", "at_budget", "at_convergence") if k in report]
    own = list({row["max_iter"]: row for row in own}.values())
    rows = report["sweep"] + [{**row, "solver": row["solver"] + "*"} for row in own]
    for row in rows:
        lines.append(
            f"{row['solver']:<14}{row['max_iter']:>9}{_num(row.get(metric), '.4f'):>10}"
            f"{_num(row.get('fwd_converged'), '.3f'):>11}{_num(row.get('fwd_nstep'), '.2f'):>8}"
            f"{_num(row.get('fwd_residual'), '.2e'):>11}"
        )
    lines.append(
        f"* the model's own solver and options: at its training budget "
        f"({report.get('train_max_iter', '-')}), eval budget ({report['eval_max_iter']}) and "
        f"at convergence ({report['at_convergence']['max_iter']})"
    )
    rho = report.get("spectral_radius") or {}
    if rho:
        lines.append(
            f"spectral radius of J_f at z* ({rho['n']} samples): mean {_num(rho['mean'], '.3f')} "
            f"median {_num(rho['median'], '.3f')} p90 {_num(rho['p90'], '.3f')} max "
            f"{_num(rho['max'], '.3f')}, below 1: {rho['below_1']:.0%}"
        )
    adj = report.get("adjoint") or {}
    if adj.get("implicit"):
        lines.append(
            f"adjoint at the training budget {report['train_max_iter']} ({adj['backward']}): "
            f"converged {adj['converged']:.3f}, mean {adj['nstep']:.2f} iterations, residual "
            f"{adj['residual']:.2e} (tol {_num(adj['tol'], 'g')})"
        )
    elif adj:
        lines.append(f"adjoint: {adj['backward']} runs no adjoint solve")
    gap = report["gap"]
    lines.append(
        f"{metric}: {_num(gap['at_budget'], '.4f')} at the eval budget, "
        f"{_num(gap['at_convergence'], '.4f')} at convergence (difference "
        f"{_num(gap['difference'], '+.4f')}, noise ~{_num(gap['noise'], '.4f')})"
    )
    tgap = report.get("train_gap") or {}
    if tgap and tgap.get("max_iter") != report["eval_max_iter"]:
        lines.append(
            f"{metric}: {_num(tgap['at_budget'], '.4f')} at the training budget, difference to "
            f"convergence {_num(tgap['difference'], '+.4f')}"
        )
    lines.append(report["verdict"]["summary"])
    lines.extend(f"advice: {a}" for a in report["verdict"]["advice"])
    return "\n".join(lines)


def write_report(report: dict, out: str | Path) -> list[Path]:
    """Write ``diagnose.json``, ``diagnose.png`` (convergence and metric against the budget
    per solver) and ``diagnose_rho.png`` (histogram of ρ(J_f) at z*) into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "diagnose.json"]
    written[0].write_text(json.dumps(strict(report), indent=2, allow_nan=False) + "\n")
    metric = report["metric"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for solver in dict.fromkeys(r["solver"] for r in report["sweep"]):
        rows = [r for r in report["sweep"] if r["solver"] == solver]
        budgets = [r["max_iter"] for r in rows]
        for ax, key in zip(axes, ("fwd_converged", metric, "fwd_residual"), strict=True):
            ax.plot(budgets, [r.get(key, math.nan) for r in rows], "o-", label=solver)
    for ax, label in zip(
        axes,
        (
            f"share within tol {report['tol']:g}",
            f"{report.get('split', 'eval')} {metric}",
            "mean residual",
        ),
        strict=True,
    ):
        ax.axvline(report["eval_max_iter"], color="k", ls=":", lw=1, label="eval budget")
        if report.get("train_max_iter", report["eval_max_iter"]) != report["eval_max_iter"]:
            ax.axvline(report["train_max_iter"], color="C2", ls=":", lw=1, label="train budget")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("max_iter")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].axhline(
        report["at_convergence"].get(metric, math.nan), color="C3", ls="--", lw=1,
        label=f"at convergence ({report['at_convergence']['max_iter']} it)",
    )  # fmt: skip
    axes[2].set_yscale("log")
    axes[2].axhline(report["tol"], color="k", ls="--", lw=1, label="tol")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle(report["verdict"]["status"] + ": convergence and metric by budget")
    fig.tight_layout()
    written.append(out / "diagnose.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    rho = [v for v in (report.get("spectral_radius") or {}).get("per_sample", []) if v is not None]
    if rho:
        fig, ax = plt.subplots(figsize=(5, 4))
        finite = [v for v in rho if math.isfinite(v)]
        lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
        # Equal values up to rounding (a linear f: one ρ for every sample) leave numpy no
        # room for 20 bins; widen the range around them.
        span = (lo - 0.01, hi + 0.01) if hi - lo < 1e-6 * max(1.0, abs(hi)) else (lo, hi)
        ax.hist(finite, bins=20, range=span, color="C0")
        ax.axvline(1.0, color="C3", ls="--", label="rho = 1")
        ax.set_xlabel("spectral radius of J_f at z*")
        ax.set_ylabel("samples")
        ax.legend()
        fig.tight_layout()
        written.append(out / "diagnose_rho.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written
