"""Measurements behind the torch loop's stopping choices (issue 11), one thread.

    python benchmarks/stopping.py truth    # cost of the final check evaluation, problems (a), (b)
    python benchmarks/stopping.py memory   # Broyden memory in {10,20,30,50,100} x (a), (b), (d)
    python benchmarks/stopping.py rules    # rel / abs / mixed at z* = 0 and on problem (a)
    python benchmarks/stopping.py coupled  # sample vs batch scope on the coupled test problems

``truth`` prints nfev and the best-of-``--reps`` time of each solve; run it once on this tree and
once with ``PYTHONPATH`` pointing at an older ``src`` to compare. Times are the process's CPU
time (one thread), the minimum over ``--reps`` runs: on a shared, loaded machine wall clock
mostly measures the wait for a core.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import problems  # noqa: E402

import deqkit as dk  # noqa: E402


def _timed(fn, reps: int):
    best, out = float("inf"), None
    for _ in range(reps):
        start = time.process_time()
        out = fn()
        best = min(best, time.process_time() - start)
    return best, out


def _solve(prob, solver, **kw):
    with torch.no_grad():
        return dk.solve(prob.f, prob.z0, solver, on_failure="ignore", **kw)


def truth(reps: int, tol: float) -> None:
    print("problem solver       nfev  nstep(max)  converged  time_ms  f_eval_ms")
    for key in ("a", "b"):
        prob = problems.make(key)
        with torch.no_grad():
            t_f, _ = _timed(lambda p=prob: p.f(p.z0), reps)
        for solver in ("fixed_point", "anderson", "broyden"):
            t, sol = _timed(
                lambda p=prob, s=solver: _solve(p, s, tol=tol, max_iter=p.max_iter), reps
            )
            conv = float(sol.converged.float().mean())
            print(
                f"{key:7s} {solver:12s} {sol.nfev:5d} {int(sol.nstep.max()):11d} {conv:10.3f} "
                f"{1e3 * t:8.2f} {1e3 * t_f:10.3f}"
            )


def memory(reps: int, tol: float, keys: str = "abd") -> None:
    print("problem memory update converged  nstep(mean/max)  nfev  time_ms")
    for key in keys:
        prob = problems.make(key)
        for update in ("bad", "good"):
            for mem in (10, 20, 30, 50, 100):
                solver = dk.Broyden(memory=mem, update=update)
                t, sol = _timed(
                    lambda p=prob, s=solver: _solve(p, s, tol=tol, max_iter=p.max_iter), reps
                )
                conv = float(sol.converged.float().mean())
                print(
                    f"{key:7s} {mem:6d} {update:6s} {conv:9.3f} "
                    f"{sol.nstep.float().mean():8.1f}/{int(sol.nstep.max()):<4d} "
                    f"{sol.nfev:5d} {1e3 * t:8.2f}"
                )


def rules(reps: int, tol: float) -> None:
    gen = torch.Generator().manual_seed(0)
    w = 0.9 * torch.linalg.qr(torch.randn(512, 512, generator=gen))[0]
    zero = problems.Problem(
        "0", "tanh(W z), z* = 0", _Zero(w), torch.zeros(64, 512), torch.randn(64, 512), 100
    )
    print("problem  mode   solver       status     converged nstep(max) nfev  |z|max    time_ms")
    for prob in (zero, problems.make("a")):
        for mode in ("rel", "abs", "mixed"):
            for solver in ("fixed_point", "anderson", "broyden"):
                t, sol = _timed(
                    lambda p=prob, s=solver, m=mode: _solve(
                        p, s, tol=tol, max_iter=p.max_iter, stop_mode=m
                    ),
                    reps,
                )
                conv = float(sol.converged.float().mean())
                print(
                    f"{prob.key:8s} {mode:6s} {solver:12s} {sol.status.name:10s} {conv:9.3f} "
                    f"{int(sol.nstep.max()):10d} {sol.nfev:5d} {float(sol.z.abs().max()):.1e} "
                    f"{1e3 * t:8.2f}"
                )


def coupled(reps: int, tol: float) -> None:
    """The four coupled problems of tests/solvers/test_coupled_batch.py (float64, their own
    tol), max_iter 200: status, converged share, steps, nfev and the true worst residual."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "solvers"))
    from test_coupled_batch import PROBLEMS, SOLVERS, _true_residual

    print("problem        solver         scope  status     converged nstep nfev  true_max")
    for name, build in PROBLEMS.items():
        for solver_name, solver in SOLVERS.items():
            for scope in ("sample", "batch"):
                f, z0, opts = build()
                sol = dk.solve(f, z0, solver, max_iter=200, stop_scope=scope,
                               on_failure="ignore", **opts)  # fmt: skip
                true = _true_residual(f, sol, opts.get("stop_mode", "rel"))
                print(
                    f"{name:14s} {solver_name:14s} {scope:6s} {sol.status.name:10s} "
                    f"{float(sol.converged.double().mean()):9.3f} {int(sol.nstep.max()):5d} "
                    f"{sol.nfev:5d} {float(true.max()):.2e}"
                )


class _Zero(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = w

    def forward(self, z, x):
        return torch.tanh(z @ self.w.T)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("truth", "memory", "rules", "coupled"))
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--problems", default="abd", help="memory: which problems, e.g. 'd'")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.what == "memory":
        memory(args.reps, args.tol, args.problems)
    else:
        {"truth": truth, "rules": rules, "coupled": coupled}[args.what](args.reps, args.tol)


if __name__ == "__main__":
    main()
