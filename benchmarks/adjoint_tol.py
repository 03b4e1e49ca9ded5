"""Adjoint tolerance: gradient accuracy against a closed form, and backward/forward time.

Part 1 (float64): the linear DEQ z = W z + x (B=8, D=64, W symmetric with ‖W‖₂ = 0.9) and the
loss L = Σ c·z*. Closed form: u = (I − Wᵀ)⁻¹ c, dL/dx = u, dL/dW = Σ_b u z*_bᵀ. For each forward
tol the relative gradient error (max over dL/dx and dL/dW) is printed for adjoint tolerances
1e-6 (the old default), "forward" (the adjoint solved to the forward tol, the new default) and
forward/100.

Part 2 (float32, 1 thread): median backward/forward wall-time ratio on benchmark problems (a)
and (b) for the same adjoint rules, at a forward tol of 1e-4 (``make bench``'s tol).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/adjoint_tol.py [--reps 5] [--skip-timing]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import problems  # noqa: E402

import deqkit as dk  # noqa: E402

TOLS = (1e-4, 1e-6, 1e-8, 1e-10, 1e-12)


def _rules(tol: float) -> dict[str, float | None]:
    # None: the default of the installed deqkit (the forward tol after the change).
    return {"1e-6 (old)": 1e-6, "= forward": tol, "forward/100": tol / 100}


def linear_errors() -> None:
    gen = torch.Generator().manual_seed(0)
    d, batch = 64, 8
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    w0 = (q * torch.linspace(-0.9, 0.9, d, dtype=torch.float64)) @ q.T
    x0 = torch.randn(batch, d, generator=gen, dtype=torch.float64)
    c = torch.randn(batch, d, generator=gen, dtype=torch.float64)
    eye = torch.eye(d, dtype=torch.float64)
    z_exact = torch.linalg.solve(eye - w0, x0.T).T
    u = torch.linalg.solve((eye - w0).T, c.T).T
    exact = {"x": u, "W": u.T @ z_exact}
    rules = _rules(1.0)
    print("| forward tol | " + " | ".join(f"adjoint {k}" for k in rules) + " | default |")
    print("|---" * (len(rules) + 2) + "|")
    for tol in TOLS:
        cells = []
        for adjoint_tol in [*_rules(tol).values(), None]:
            w = w0.clone().requires_grad_()
            x = x0.clone().requires_grad_()
            backward = (
                dk.Implicit() if adjoint_tol is None else dk.Implicit(tol=adjoint_tol, max_iter=400)
            )
            z, _ = dk.fixed_point(
                lambda z, w=w, x=x: z @ w.T + x,
                torch.zeros(batch, d, dtype=torch.float64),
                backward=backward,
                tol=tol,
                max_iter=400,
                on_failure="ignore",
            )
            (z * c).sum().backward()
            err = max(
                ((g - exact[k]).norm() / exact[k].norm()).item()
                for k, g in (("x", x.grad), ("W", w.grad))
            )
            cells.append(f"{err:.1e}")
        print(f"| {tol:g} | " + " | ".join(cells) + " |")


def timing(reps: int) -> None:
    tol = 1e-4
    print(f"\nbackward/forward time, forward tol {tol:g}, 1 thread, median of {reps}")
    print(
        "| problem | adjoint tol | forward (ms) | backward (ms) | backward/forward "
        "| adjoint steps |"
    )
    print("|---|---|---|---|---|---|")
    for key in "ab":
        problem = problems.make(key)
        gen = torch.Generator().manual_seed(7)
        weight = torch.randn(problem.z0.shape, generator=gen)
        rules = {**_rules(tol), "default": None}
        runs: dict[str, list] = {k: [] for k in rules}
        for rnd in range(reps + 1):
            for label in list(rules) if rnd % 2 == 0 else list(rules)[::-1]:
                adjoint_tol = rules[label]
                backward = dk.Implicit() if adjoint_tol is None else dk.Implicit(tol=adjoint_tol)
                problem.cell.zero_grad(set_to_none=True)
                start = time.perf_counter()
                z, sol = dk.fixed_point(
                    problem.f, problem.z0, "anderson", backward, tol=tol,
                    max_iter=problem.max_iter, on_failure="ignore",
                )  # fmt: skip
                mid = time.perf_counter()
                ((z * weight).sum() / z.shape[0]).backward()
                end = time.perf_counter()
                if rnd:
                    runs[label].append((mid - start, end - mid, int(sol.backward.nstep.max())))
        for label, rows in runs.items():
            fwd = statistics.median(r[0] for r in rows)
            bwd = statistics.median(r[1] for r in rows)
            ratio = statistics.median(r[1] / r[0] for r in rows)
            print(
                f"| {key} | {label} | {fwd * 1e3:.1f} | {bwd * 1e3:.1f} | {ratio:.2f} | "
                f"{rows[-1][2]} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    linear_errors()
    if not args.skip_timing:
        timing(args.reps)


if __name__ == "__main__":
    main()
