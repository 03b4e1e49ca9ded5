"""The analytic-ε benchmark (zoo.md §7d): Gaussian data N(μ, 0.3²I) in d = 64, its exact noise
predictor, DEQ-DDIM vs sequential DDIM in float64 for each schedule, η and T, under the three
stopping criteria. ``python -m deqkit.zoo.deq_ddim.bench [--steps 20 50 100]``."""

from __future__ import annotations

import argparse

import torch

from .analytic import GaussianEps
from .sampler import ddim_sample, deq_sample, draw_noise
from .schedule import SCHEDULES, alpha_bars, ddim_steps

__all__ = ["analytic_rows", "main"]

#: (criterion, tol): per-pixel RMS residual of every state / of x0, and the paper's global rel.
CRITERIA_TOLS = (("per_state", 1e-4), ("final", 1e-4), ("global", 1e-3))


def analytic_rows(steps=(20, 50, 100), etas=(0.0, 0.7), schedules=SCHEDULES, batch=3) -> list:
    """One dict per (schedule, η, T, criterion): rounds, converged share, max |Δx0|.

    >>> rows = analytic_rows(steps=(5,), etas=(0.0,), schedules=("linear",), batch=1)
    >>> len(rows), rows[0]["converged"], rows[0]["max_abs_diff"] < 1e-3
    (3, 1.0, True)
    """
    f64 = torch.float64
    rows = []
    for schedule in schedules:
        abar = alpha_bars(schedule, 1000, f64)
        eps = GaussianEps(abar, mean=torch.linspace(-0.8, 0.8, 64, dtype=f64), std=0.3)
        for eta in etas:
            for n in steps:
                s = ddim_steps(abar, n, eta=eta)
                g = torch.Generator().manual_seed(0)
                x_T = torch.randn(batch, 64, dtype=f64, generator=g)
                noise = draw_noise(s, x_T, generator=g)
                ref = ddim_sample(eps, x_T, s, noise)
                for criterion, tol in CRITERIA_TOLS:
                    out = deq_sample(eps, x_T, s, noise, tol=tol, criterion=criterion)
                    rows.append({
                        "schedule": schedule, "eta": eta, "steps": n, "criterion": criterion,
                        "tol": tol, "rounds": out.rounds,
                        "converged": out.converged.float().mean().item(),
                        "max_abs_diff": (out.x0 - ref).abs().max().item(),
                    })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> list:
    """Print the analytic benchmark as a Markdown table."""
    p = argparse.ArgumentParser(description="DEQ-DDIM vs DDIM with the exact Gaussian ε.")
    p.add_argument("--steps", type=int, nargs="+", default=[20, 50, 100])
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = analytic_rows(tuple(args.steps))
    print("| schedule | η | T | criterion (tol) | DEQ rounds | converged | max abs Δx0 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['schedule']} | {r['eta']} | {r['steps']} | {r['criterion']} ({r['tol']:g}) "
            f"| {r['rounds']} | {r['converged']:.0%} | {r['max_abs_diff']:.1e} |"
        )
    return rows


if __name__ == "__main__":
    main()
