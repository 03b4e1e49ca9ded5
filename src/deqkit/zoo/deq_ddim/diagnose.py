"""Health of the DEQ sampler (issue 21): the trained denoiser has no ``dk.DEQ`` layer (the DEQ is
the sampler), so ``deqkit diagnose`` does not apply; this is its counterpart.

``python -m deqkit.zoo.deq_ddim.diagnose CHECKPOINT [--steps 20 50] [--n 16] [--tol 1e-4]
[--max-iter K ...] [--x0-tol 1e-3] [--json report.json]`` solves the joint fixed point from the
same x_T at several iteration budgets and prints, per T and budget, the share of images whose
every state meets the per-state criterion (``converged``), the rounds used, the largest stopping
residual, and the final-image error against sequential DDIM (max and mean |Δx₀|). The eval
budget is the sampler's default, 2T + 2; the reference budget is 4× that. Verdict per T:

- ``healthy``: ≥ 90% converged at the eval budget, max |Δx₀| ≤ ``x0_tol`` there, and the 4×
  budget's max |Δx₀| is also ≤ ``x0_tol`` (more iterations do not change the answer);
- ``unconverged``: < 90% converged at the eval budget;
- ``inexact``: converged by the criterion but x₀ is off by more than ``x0_tol`` (the criterion
  does not bound the final image: e.g. ``--criterion global``, or a loose ``--tol``).
"""

from __future__ import annotations

import argparse
import json

import torch

from .sampler import CRITERIA, EpsModel, ddim_sample, deq_sample, draw_noise
from .schedule import DDIMSteps, ddim_steps

__all__ = ["HEALTHY_SHARE", "diagnose_sampler", "main", "sampler_verdict"]

#: Share of images that must meet the stopping criterion at the eval budget.
HEALTHY_SHARE = 0.9


def diagnose_sampler(
    eps_model: EpsModel,
    x_T: torch.Tensor,
    steps: DDIMSteps,
    budgets: list[int] | None = None,
    *,
    noise: torch.Tensor | None = None,
    tol: float = 1e-4,
    criterion: str = "per_state",
    x0_tol: float = 1e-3,
) -> dict:
    """One T's health table: a row per iteration budget (each solve from scratch) with
    ``converged``, ``rounds``, ``residual`` (largest stopping residual), ``max_abs_dx0`` and
    ``mean_abs_dx0`` against sequential DDIM; plus ``eval_max_iter`` (2S + 2), the rows
    ``at_budget`` and ``at_reference`` (4×) and the ``verdict``.

    >>> from deqkit.zoo.deq_ddim import GaussianEps, alpha_bars
    >>> abar = alpha_bars("linear", 100)
    >>> x_T = torch.randn(3, 16, dtype=torch.float64)
    >>> report = diagnose_sampler(GaussianEps(abar, 0.5, 0.3), x_T, ddim_steps(abar, 10), [2])
    >>> [(r["max_iter"], r["converged"]) for r in report["rows"]]
    [(2, 0.0), (22, 1.0), (88, 1.0)]
    >>> report["verdict"]["status"]
    'healthy'
    """
    n = len(steps)
    eval_budget = 2 * n + 2
    reference = 4 * eval_budget
    budgets = sorted({*(budgets if budgets is not None else _default_budgets(n)), eval_budget,
                      reference})  # fmt: skip
    ref_x0 = ddim_sample(eps_model, x_T, steps, noise)
    rows = []
    for k in budgets:
        out = deq_sample(eps_model, x_T, steps, noise, tol=tol, max_iter=k, criterion=criterion)
        diff = (out.x0 - ref_x0).abs().flatten(1)
        rows.append(
            {
                "max_iter": k,
                "converged": out.converged.float().mean().item(),
                "rounds": out.rounds,
                "nfev": int(out.solution.nfev),
                "residual": out.residual.max().item(),
                "max_abs_dx0": diff.max().item(),
                "mean_abs_dx0": diff.mean().item(),
                "seconds": out.seconds,
            }
        )
    by_budget = {r["max_iter"]: r for r in rows}
    report = {
        "steps": n,
        "n": x_T.shape[0],
        "tol": tol,
        "criterion": criterion,
        "x0_tol": x0_tol,
        "eval_max_iter": eval_budget,
        "rows": rows,
        "at_budget": by_budget[eval_budget],
        "at_reference": by_budget[reference],
    }
    report["verdict"] = sampler_verdict(report)
    return report


def _default_budgets(n: int) -> list[int]:
    return sorted({max(1, n // 4), max(1, n // 2), n})


def sampler_verdict(report: dict) -> dict:
    """``{"status", "reason"}`` from a :func:`diagnose_sampler` report (see the module doc).

    >>> row = {"converged": 1.0, "max_abs_dx0": 2e-4}
    >>> base = {"x0_tol": 1e-3, "eval_max_iter": 42, "at_reference": row}
    >>> sampler_verdict({**base, "at_budget": row})["status"]
    'healthy'
    >>> sampler_verdict({**base, "at_budget": {**row, "converged": 0.5}})["status"]
    'unconverged'
    """
    at, ref, bound = report["at_budget"], report["at_reference"], report["x0_tol"]
    k = report["eval_max_iter"]
    if at["converged"] < HEALTHY_SHARE:
        return {
            "status": "unconverged",
            "reason": f"{at['converged']:.0%} of images meet the criterion at the eval budget "
            f"{k} (< {HEALTHY_SHARE:.0%})",
        }
    worst = max(at["max_abs_dx0"], ref["max_abs_dx0"])
    if worst > bound:
        return {
            "status": "inexact",
            "reason": f"converged {at['converged']:.0%} but max |dx0| vs sequential DDIM is "
            f"{at['max_abs_dx0']:.1e} at {k} and {ref['max_abs_dx0']:.1e} at {4 * k} "
            f"(> {bound:g}): the criterion does not bound x0 here",
        }
    return {
        "status": "healthy",
        "reason": f"{at['converged']:.0%} converged at {k} iterations, max |dx0| "
        f"{at['max_abs_dx0']:.1e} (4x budget: {ref['max_abs_dx0']:.1e}) <= {bound:g}",
    }


def _table(report: dict) -> str:
    head = (
        f"T = {report['steps']} ({report['n']} images, {report['criterion']} tol "
        f"{report['tol']:g}; eval budget {report['eval_max_iter']})\n"
        "| max_iter | converged | rounds | max residual | max abs dx0 | mean abs dx0 | s |\n"
        "|---|---|---|---|---|---|---|"
    )
    lines = [
        f"| {r['max_iter']} | {r['converged']:.0%} | {r['rounds']} | {r['residual']:.1e} | "
        f"{r['max_abs_dx0']:.1e} | {r['mean_abs_dx0']:.1e} | {r['seconds']:.1f} |"
        for r in report["rows"]
    ]
    verdict = report["verdict"]
    return "\n".join([head, *lines, f"verdict: {verdict['status']} — {verdict['reason']}"])


def main(argv: list[str] | None = None) -> list[dict]:
    """The command line (module doc); returns one report per T."""
    from deqkit.train.errors import ConfigError

    from .commands import load_denoiser

    p = argparse.ArgumentParser(prog="python -m deqkit.zoo.deq_ddim.diagnose")
    p.add_argument("checkpoint")
    p.add_argument("--steps", type=int, nargs="+", default=[20, 50])
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--criterion", choices=CRITERIA, default="per_state")
    extra = "budgets besides the eval budget 2T+2 and 4x it (default T/4, T/2, T)"
    p.add_argument("--max-iter", type=int, nargs="+", default=None, help=extra)
    p.add_argument("--x0-tol", type=float, default=1e-3)
    p.add_argument("--eta", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.n < 1 or (args.max_iter and min(args.max_iter) < 1):
        raise ConfigError("--n and --max-iter must be >= 1")
    model, state = load_denoiser(args.checkpoint)
    info = state["data_info"]
    shape = (args.n, info["in_channels"], info["image_size"], info["image_size"])
    reports = []
    for n_steps in args.steps:
        try:
            steps = ddim_steps(model.abar, n_steps, eta=args.eta)
        except ValueError as exc:
            raise ConfigError(f"--steps/--eta: {exc}") from None
        g = torch.Generator().manual_seed(args.seed)
        x_T = torch.randn(shape, generator=g)
        noise = draw_noise(steps, x_T, generator=g)
        report = diagnose_sampler(
            model.eps, x_T, steps, args.max_iter, noise=noise, tol=args.tol,
            criterion=args.criterion, x0_tol=args.x0_tol,
        )  # fmt: skip
        report["eta"] = args.eta
        print(_table(report), flush=True)
        reports.append(report)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"checkpoint": args.checkpoint, "reports": reports}, fh, indent=1)
    return reports


if __name__ == "__main__":
    import sys

    from deqkit.train.errors import UserError

    try:
        main()
    except UserError as exc:
        sys.exit(f"deqkit.zoo.deq_ddim.diagnose: error: {exc}")
