"""Backward strategies: wall time of the forward solve and of the backward pass, per problem.

Each strategy runs ``dk.fixed_point`` at the benchmark tolerance, then ``loss.backward()`` on a
fixed random linear readout (see :func:`_loss`). "implicit" uses the forward tolerance for its
adjoint solve (the equal-tolerance comparison, and the default since issue 11);
"implicit-1e-6" is the earlier fixed default (tol 1e-6, 50 steps).
SHINE reuses Broyden's inverse estimate, so it runs with a Broyden forward, next to implicit with
the same forward; it is included when the installed deqkit exposes ``dk.Shine``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from problems import Problem

import deqkit as dk


def strategies(tol: float) -> dict[str, tuple[str, object]]:
    """The (forward solver, backward object) pairs compared, by label."""
    table = {
        "implicit": ("anderson", dk.Implicit(tol=tol)),
        "implicit-1e-6": ("anderson", dk.Implicit(tol=1e-6, max_iter=50)),
        "phantom-5": ("anderson", dk.Phantom(steps=5)),
        "one_step": ("anderson", dk.OneStep()),
    }
    shine = getattr(dk, "Shine", None)
    if shine is not None:
        table["implicit/broyden"] = ("broyden", dk.Implicit(tol=tol))
        table["shine/broyden"] = ("broyden", shine())
    return table


def _loss(problem: Problem, z: torch.Tensor) -> torch.Tensor:
    """A fixed random linear readout. Not ‖z‖²: cells (b) and (c) end in a normalisation whose
    output norm is constant, so that loss has no gradient through z* and the adjoint solve would
    stop after one step."""
    gen = torch.Generator().manual_seed(7)
    weight = torch.randn(z.shape, generator=gen, dtype=z.dtype)
    return (z * weight).sum() / z.shape[0]


def _step(problem: Problem, solver: str, backward, tol: float) -> tuple[float, float, int]:
    problem.cell.zero_grad(set_to_none=True)
    start = time.perf_counter()
    z, sol = dk.fixed_point(
        problem.f,
        problem.z0,
        solver,
        backward,
        tol=tol,
        max_iter=problem.max_iter,
        on_failure="ignore",
    )
    mid = time.perf_counter()
    _loss(problem, z).backward()
    end = time.perf_counter()
    steps = int(sol.backward.nstep.max()) if sol.backward is not None else 0
    return mid - start, end - mid, steps


def measure(problem: Problem, tol: float, reps: int, log: Callable[[str], None]) -> list[dict]:
    """Median forward and backward seconds per strategy over ``reps`` interleaved rounds after a
    warm-up round."""
    table = strategies(tol)
    runs: dict[str, list] = {label: [] for label in table}
    for rnd in range(reps + 1):
        labels = list(table) if rnd % 2 == 0 else list(table)[::-1]
        for label in labels:
            result = _step(problem, *table[label], tol)
            if rnd > 0:
                runs[label].append(result)
    rows = []
    for label, results in runs.items():
        fwd = statistics.median(r[0] for r in results)
        bwd = statistics.median(r[1] for r in results)
        rows.append(
            {
                "problem": problem.key,
                "backward": label,
                "solver": table[label][0],
                "forward_s": fwd,
                "backward_s": bwd,
                # Paired within each run, so load drifts between runs cancel.
                "ratio": statistics.median(r[1] / r[0] for r in results),
                "adjoint_steps": results[-1][2],
            }
        )
        log(
            f"  ({problem.key}) {label:16s} forward {fwd * 1e3:8.1f} ms  "
            f"backward {bwd * 1e3:8.1f} ms  "
            f"backward/forward {rows[-1]['ratio']:5.2f}"
        )
    return rows
