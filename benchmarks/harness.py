"""Running one solver of either library on a problem, counting, timing and checking it the same way.

Both libraries receive the very same f, wrapped in a :class:`Probe` that counts evaluations (and,
when asked, times each one or records the residual of each evaluated point), the same z0, the
same relative tolerance and the same max_iter. Everything else is each library's default. The
final residual is measured here, ‖f(z) − z‖ / ‖f(z)‖ of the returned z, never taken from a
library's own report (the two libraries measure it at slightly different points).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from problems import Problem
from torchdeq.solver.anderson import anderson_solver
from torchdeq.solver.broyden import broyden_solver
from torchdeq.solver.fp_iter import fixed_point_iter

import deqkit as dk

SOLVERS = ("fixed_point", "anderson", "broyden", "broyden_good")
LIBRARIES = ("deqkit", "torchdeq")
TORCHDEQ = {
    "fixed_point": fixed_point_iter,
    "anderson": anderson_solver,
    "broyden": broyden_solver,
    "broyden_good": broyden_solver,
}
#: deqkit's side of each label: the defaults, plus Broyden with the "good" update (the method of
#: the DEQ papers and TorchDEQ) next to deqkit's default "bad" one, for an algorithm-for-algorithm
#: comparison. Only the default rows count for the targets.
DEQKIT = {
    "fixed_point": "fixed_point",
    "anderson": "anderson",
    "broyden": "broyden",
    "broyden_good": dk.Broyden(update="good"),
}


@dataclass
class Probe:
    """Wraps f: counts calls; optionally sums the time spent inside f and records residuals."""

    f: Callable[[torch.Tensor], torch.Tensor]
    timed: bool = False
    traced: bool = False
    calls: int = 0
    seconds: float = 0.0
    trace: list = field(default_factory=list)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if not self.timed:
            out = self.f(z)
        else:
            start = time.perf_counter()
            out = self.f(z)
            self.seconds += time.perf_counter() - start
        if self.traced:
            self.trace.append(rel_residual(z, out).max().item())
        return out


def rel_residual(z: torch.Tensor, fz: torch.Tensor) -> torch.Tensor:
    """Per-sample ‖f(z) − z‖ / ‖f(z)‖ over all non-batch elements."""
    diff = (fz - z).flatten(1).norm(dim=1)
    return diff / fz.flatten(1).norm(dim=1).clamp_min(torch.finfo(fz.dtype).tiny)


def run_solver(
    library: str, solver: str, problem: Problem, probe: Probe, tol: float
) -> torch.Tensor:
    """Solve ``problem`` with ``library``'s ``solver`` through ``probe``; return the solution z."""
    if library == "deqkit":
        sol = dk.solve(
            probe,
            problem.z0,
            DEQKIT[solver],
            tol=tol,
            max_iter=problem.max_iter,
            stop_mode="rel",
            on_failure="ignore",
        )
        return sol.z
    with torch.no_grad():
        z, _, _ = TORCHDEQ[solver](
            probe, problem.z0, max_iter=problem.max_iter, tol=tol, stop_mode="rel"
        )
    return z


@dataclass
class Record:
    """Measurements of one (problem, solver, library) configuration."""

    problem: str
    solver: str
    library: str
    nfev: int = 0
    residual: float = float("nan")
    times: list = field(default_factory=list)
    f_seconds: list = field(default_factory=list)
    trace: list = field(default_factory=list)

    @property
    def time(self) -> float:
        return statistics.median(self.times)

    @property
    def f_time(self) -> float:
        """Median seconds spent inside f during one solve."""
        return statistics.median(self.f_seconds)

    @property
    def overhead(self) -> float:
        """Median solver time per f-evaluation outside f, as a fraction of one f-evaluation."""
        ratios = [(t - fsec) / fsec for t, fsec in zip(self.times, self.f_seconds, strict=True)]
        return statistics.median(ratios)

    def to_json(self) -> dict:
        return {
            "problem": self.problem,
            "solver": self.solver,
            "library": self.library,
            "nfev": self.nfev,
            "residual": self.residual,
            "time_s": self.time,
            "times_s": self.times,
            "f_time_s": self.f_time,
            "overhead": self.overhead,
            "trace": self.trace,
        }


def measure(problem: Problem, tol: float, reps: int, log: Callable[[str], None]) -> list[Record]:
    """Every solver of both libraries on ``problem``: one checked and traced run (which is also
    the warm-up), then ``reps`` rounds in which each configuration runs once, the order of the
    two libraries alternating from round to round. Timing f inside the same run costs two clock
    reads per evaluation, far below anything measured, so one run gives both wall time and
    overhead."""
    records = {(s, lib): Record(problem.key, s, lib) for s in SOLVERS for lib in LIBRARIES}
    with torch.no_grad():
        for (solver, library), rec in records.items():
            probe = Probe(problem.f, traced=True)
            z = run_solver(library, solver, problem, probe, tol)
            rec.nfev, rec.trace = probe.calls, probe.trace
            rec.residual = rel_residual(z, problem.f(z)).max().item()
        for rnd in range(reps):
            for solver in SOLVERS:
                for library in LIBRARIES if rnd % 2 == 0 else LIBRARIES[::-1]:
                    rec = records[(solver, library)]
                    probe = Probe(problem.f, timed=True)
                    start = time.perf_counter()
                    run_solver(library, solver, problem, probe, tol)
                    rec.times.append(time.perf_counter() - start)
                    rec.f_seconds.append(probe.seconds)
        for rec in records.values():
            log(
                f"  ({problem.key}) {rec.solver:11s} {rec.library:8s} nfev {rec.nfev:3d}  "
                f"residual {rec.residual:.2e}  time {rec.time * 1e3:8.1f} ms  "
                f"overhead {100 * rec.overhead:5.1f}% of f"
            )
    return list(records.values())
