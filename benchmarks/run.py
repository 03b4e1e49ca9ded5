"""``make bench``: deqkit vs TorchDEQ 0.1.0 on problems (a)-(d), backward and memory benchmarks.

Writes ``benchmarks/results/{RESULTS.md, results.json, residual_*.png}`` and prints PASS/FAIL per
target (targets are reported, never asserted). ``--quick`` runs fewer repetitions and skips the
memory subprocesses, for trying changes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import backward_bench  # noqa: E402
import harness  # noqa: E402
import memory  # noqa: E402
import problems  # noqa: E402
import report  # noqa: E402
import torch  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions after warm-up")
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--problems", default="abcd")
    parser.add_argument("--quick", action="store_true", help="2 repetitions, no memory runs")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    reps = 2 if args.quick else args.reps
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    start = time.perf_counter()
    load_start = os.getloadavg()[0]

    def log(text: str) -> None:
        print(text, flush=True)

    records = []
    for key in args.problems:
        problem = problems.make(key)
        log(f"forward solves, ({key}) {problem.title}")
        records += harness.measure(problem, args.tol, reps, log)
    backward = []
    for key in "abc":
        if key in args.problems:
            log(f"backward, ({key})")
            backward += backward_bench.measure(problems.make(key), args.tol, min(reps, 3), log)
    mem_rows = []
    if not args.quick:
        log("training-step memory, each configuration in its own process")
        mem_rows = memory.measure_all("b", ("implicit", "unrolled"), (8, 16, 32, 64), log)
    env = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "load_start": round(load_start, 2),
        "load_end": round(os.getloadavg()[0], 2),
        "reps": reps,
        "tol": args.tol,
        "seconds": time.perf_counter() - start,
        "memory_problem": "b",
        "problems": {k: problems.make(k).title for k in args.problems},
    }
    checks = report.targets(records, backward, mem_rows)
    report.write(args.out, records, backward, mem_rows, checks, env)
    log(f"\ntargets ({env['seconds']:.0f} s, results in {args.out}):")
    for name, ok, detail in checks:
        log(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
