"""A/B timing of deqkit's torch solvers with both trees in ONE process (no per-process bias).

``ab_refactor.py`` runs each tree in its own worker process; an A/A run there (c441af2 against
itself) shows that a process's own memory layout and core shift its times by a few per cent.
Here the old tree's ``deqkit`` package is copied under the name ``deqkit_old`` (its solver, loop
and ``solve`` code import each other relatively), both are imported into this process, and
their solves alternate, so allocator state, caches and load hit both alike. CPU time
(``time.process_time``) of one ``solve`` per side per round; per configuration the minimum, the
median of the per-round ratios new/old and their interquartile range.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ab_inprocess.py --new HEAD --rounds 60
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SOLVERS = ("fixed_point", "anderson", "broyden")


def _git(*args: str) -> str:
    out = subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True)
    return out.stdout.decode().strip()


def _checkout(commit: str, where: Path) -> Path:
    _git("worktree", "add", "--detach", str(where), commit)
    return where


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="c441af2")
    parser.add_argument("--new", default="HEAD")
    parser.add_argument("--problems", default="abd")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--broyden-memory", type=int, default=30, help="both sides (default 30)")
    args = parser.parse_args(argv)
    old_c, new_c = _git("rev-parse", "--short", args.old), _git("rev-parse", "--short", args.new)
    tmp = Path(tempfile.mkdtemp(prefix="ab_inproc_"))
    trees = []
    try:
        trees = [_checkout(old_c, tmp / "old"), _checkout(new_c, tmp / "new")]
        shutil.copytree(trees[0] / "src" / "deqkit", tmp / "pkg" / "deqkit_old")
        sys.path[:0] = [str(trees[1] / "src"), str(tmp / "pkg"), str(HERE)]
        rows, load = _run(args), " ".join(f"{x:.2f}" for x in os.getloadavg())
    finally:
        for tree in trees:
            _git("worktree", "remove", "--force", str(tree))
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"`{' '.join(['python benchmarks/ab_inprocess.py', *(argv or sys.argv[1:])])}` — "
        f"old = {old_c}, new = {new_c}, one process, {args.rounds} rounds after a warm-up, "
        f"sides alternating, Broyden memory {args.broyden_memory}; load average {load} at the end."
    )
    print("\n| problem | solver | nfev old/new | CPU min old / new ms | min new/old "
          "| paired new/old | paired IQR |")  # fmt: skip
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


def _run(args) -> list[list[str]]:
    import deqkit_old as old
    import problems
    import torch

    import deqkit as new

    if "ab_inproc_" not in new.__file__ or "ab_inproc_" not in old.__file__:
        raise RuntimeError(f"imported {new.__file__} and {old.__file__}, not the two trees")
    torch.set_num_threads(1)
    libs = {"old": old, "new": new}
    configs = [(p, s) for p in args.problems for s in SOLVERS]
    built = {p: problems.make(p) for p in args.problems}
    times: dict = {(c, k): [] for c in configs for k in libs}
    nfev: dict = {}
    for rnd in range(args.rounds + 1):
        for i, (p, s) in enumerate(configs):
            for k in ("old", "new") if (rnd + i) % 2 == 0 else ("new", "old"):
                lib, prob = libs[k], built[p]
                solver = lib.Broyden(memory=args.broyden_memory) if s == "broyden" else s
                with torch.no_grad():
                    start = time.process_time()
                    sol = lib.solve(
                        prob.f, prob.z0, solver, tol=1e-4, max_iter=prob.max_iter,
                        stop_mode="rel", on_failure="ignore",
                    )  # fmt: skip
                    seconds = time.process_time() - start
                nfev[(p, s, k)] = sol.nfev
                if rnd:
                    times[((p, s), k)].append(seconds)
    rows = []
    for p, s in configs:
        o, n = times[((p, s), "old")], times[((p, s), "new")]
        ratios = [b / a for a, b in zip(o, n, strict=True)]
        q1, _, q3 = statistics.quantiles(ratios, n=4)
        rows.append([
            f"({p})", s, f"{nfev[(p, s, 'old')]}/{nfev[(p, s, 'new')]}",
            f"{1e3 * min(o):.1f} / {1e3 * min(n):.1f}", f"{min(n) / min(o):.3f}",
            f"**{statistics.median(ratios):.3f}**", f"{q1:.3f}–{q3:.3f}",
        ])  # fmt: skip
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
