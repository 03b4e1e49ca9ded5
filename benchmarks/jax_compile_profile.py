"""Where a solve's compile time goes: trace, lower and XLA compile apart, and the program's size.

For each row of ``jax_bench.py``'s compile targets (deqkit and the peers on one problem), a fresh
``jax.jit`` is traced (``.trace``), lowered (``.lower``) and compiled (``.compile``); each phase is
timed in process CPU seconds, min over ``--rounds`` rounds with every JAX cache cleared before
each. Size: the jaxpr's equations (all levels), the StableHLO text's ops, and the optimised HLO's
instructions and fusions (what XLA's CPU backend turns into kernels).

``python benchmarks/jax_compile_profile.py --problem a --rounds 3``
"""

from __future__ import annotations

import os

os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import argparse  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import jax_bench  # noqa: E402
import jax_peers  # noqa: E402
import jax_problems  # noqa: E402

from deqkit.jax.solvers._program import cached_jit  # noqa: E402


def _eqns(jaxpr) -> int:
    """Equations of a jaxpr, counting those of every sub-jaxpr (loop bodies, cond branches)."""
    total = 0
    for eqn in jaxpr.eqns:
        total += 1
        for sub in jax.core.jaxprs_in_params(eqn.params):
            total += _eqns(sub)
    return total


def _hlo_size(text: str) -> tuple[int, int]:
    lines = [ln for ln in text.splitlines() if " = " in ln and not ln.lstrip().startswith("//")]
    fusions = len(re.findall(r"^\s*\S+ = \S+ fusion\(", text, flags=re.M))
    return len(lines), fusions


def profile(make, args, rounds):
    best = {"trace": 1e9, "lower": 1e9, "compile": 1e9}
    for _ in range(rounds):
        jax.clear_caches()
        cached_jit.cache_clear()
        t0 = time.process_time()
        traced = jax.jit(make()).trace(*args)
        t1 = time.process_time()
        lowered = traced.lower()
        t2 = time.process_time()
        compiled = lowered.compile()
        t3 = time.process_time()
        for k, v in zip(best, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            best[k] = min(best[k], v)
    stablehlo = lowered.as_text()
    ops = sum(1 for ln in stablehlo.splitlines() if " = " in ln)
    instr, fusions = _hlo_size(compiled.as_text())
    return best, _eqns(traced.jaxpr.jaxpr), ops, instr, fusions


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", default="a")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="comma list of substrings of row names")
    args = parser.parse_args(argv)
    apply, params, x, z0, prob = jax_problems.make(args.problem)
    tol, max_iter = 1e-4, prob.max_iter
    call = (params, z0, x)
    rows = []
    for mode in ("batch", "sample"):
        for solver in ("fixed_point", "anderson"):
            make = jax_bench.deqkit_solve(apply, solver, tol, max_iter, mode)
            rows.append((f"deqkit {solver} {mode}", make))
        for lib, solver, make in jax_peers.configs(apply, 1e-3, max_iter, mode):
            if solver != "broyden":
                rows.append((f"{lib} {solver} {mode}", make))
    rows.append(
        ("floor fixed_point sample", lambda: jax_bench.floor_fixed_point(apply, tol, max_iter))
    )
    only = [s for s in args.only.split(",") if s]
    print(f"problem ({args.problem}), load {os.getloadavg()[0]:.1f}, min of {args.rounds} rounds")
    print(
        f"{'row':34s} {'trace':>6s} {'lower':>6s} {'compile':>7s} {'total':>6s} "
        f"{'eqns':>5s} {'shlo':>5s} {'hlo':>5s} {'fus':>4s}"
    )
    for name, make in rows:
        if only and not any(s in name for s in only):
            continue
        t, eqns, ops, instr, fusions = profile(make, call, args.rounds)
        total = sum(t.values())
        print(
            f"{name:34s} {t['trace']:6.3f} {t['lower']:6.3f} {t['compile']:7.3f} {total:6.3f} "
            f"{eqns:5d} {ops:5d} {instr:5d} {fusions:4d}",
            flush=True,
        )
    print(f"load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
