"""A/B timing of deqkit's torch solvers: one source tree against another (by default HEAD against
c441af2, the last commit before the core refactor of issue 10).

Each side runs in its own long-lived worker subprocess that imports *its* ``deqkit`` by
``sys.path`` (a commit is checked out into a temporary ``git worktree``, removed afterwards).
Both workers build the same problems from this folder's ``problems.py`` and solve with 1 thread,
``torch.no_grad()``, tolerance 1e-4 (rel), each problem's max_iter and on_failure="ignore" -- as
``make bench`` calls ``dk.solve``. The driver sends one solve at a time to one worker (never
both at once), alternating which side goes first from configuration to configuration and round
to round, so load drift from other processes hits both sides alike. The first round is a
warm-up. Per configuration it reports the minimum and the median over the timed rounds, the
ratio new/old of each, and checks that both sides used the same number of f-evaluations (a
different nfev means a different algorithm, not a slower one, and is flagged). Broyden runs with
``memory`` pinned (``--broyden-memory``, default 30, the default of c441af2; e9e0acf raised it
to 50, which changes the iterates of problem (d), whose ring wraps): one algorithm on both sides.

    .venv/bin/python benchmarks/ab_refactor.py                      # HEAD vs c441af2
    .venv/bin/python benchmarks/ab_refactor.py --new worktree --rounds 5   # uncommitted edits
    .venv/bin/python benchmarks/ab_refactor.py --rounds 30 --restarts 3     # 3 worker pairs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SOLVERS = ("fixed_point", "anderson", "broyden")
#: Wall-clock seconds and the worker's CPU seconds (time.process_time) of each solve. On a loaded
#: machine the CPU time leaves out the time a worker waited for a core.
KINDS = ("seconds", "cpu")


# ----------------------------------------------------------------------------------- worker


def _worker(src: str, tol: float, broyden_memory: int) -> None:
    """Serve solve requests (JSON lines on stdin) with the deqkit found in ``src``."""
    sys.path.insert(0, src)
    sys.path.insert(1, str(HERE))
    import problems
    import torch

    import deqkit as dk

    torch.set_num_threads(1)
    if not dk.__file__.startswith(src):
        raise RuntimeError(f"imported {dk.__file__}, not the deqkit under {src}")
    built: dict = {}
    print(json.dumps({"deqkit": dk.__file__, "torch": torch.__version__}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        key, solver = request["problem"], request["solver"]
        problem = built.setdefault(key, problems.make(key))
        if solver == "broyden":
            solver = dk.Broyden(memory=broyden_memory)
        calls = [0]

        def f(z, problem=problem, calls=calls):
            calls[0] += 1
            return problem.f(z)

        with torch.no_grad():
            start, cpu = time.perf_counter(), time.process_time()
            sol = dk.solve(
                f, problem.z0, solver, tol=tol, max_iter=problem.max_iter,
                stop_mode="rel", on_failure="ignore",
            )  # fmt: skip
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            fz = problem.f(sol.z)
            rel = ((fz - sol.z).flatten(1).norm(dim=1) / fz.flatten(1).norm(dim=1)).max().item()
        reply = {"seconds": seconds, "cpu": cpu, "nfev": calls[0], "residual": rel}
        print(json.dumps(reply), flush=True)


# ----------------------------------------------------------------------------------- driver


class Side:
    """One source tree and its worker process."""

    def __init__(self, name: str, spec: str, tol: float, broyden_memory: int):
        self.name, self.spec, self.worktree = name, spec, None
        if spec == "worktree":
            src, self.commit = REPO / "src", _git("rev-parse", "--short", "HEAD") + "+edits"
        else:
            self.commit = _git("rev-parse", "--short", spec)
            self.worktree = Path(tempfile.mkdtemp(prefix=f"ab_{name}_")) / "tree"
            _git("worktree", "add", "--detach", str(self.worktree), self.commit)
            src = self.worktree / "src"
        self.argv = [sys.executable, __file__, "--worker", str(src), "--tol", str(tol),
                     "--broyden-memory", str(broyden_memory)]  # fmt: skip
        self.start()

    def start(self) -> None:
        """Start (or restart) the worker process."""
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        env.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.info = self._read()

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} worker ({self.spec}) exited")
        return json.loads(line)

    def solve(self, problem: str, solver: str) -> dict:
        self.proc.stdin.write(json.dumps({"problem": problem, "solver": solver}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.stop()
        if self.worktree is not None:
            _git("worktree", "remove", "--force", str(self.worktree))


def _git(*args: str) -> str:
    out = subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True)
    return out.stdout.decode().strip()


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--old", default="c441af2", help="commit (default c441af2)")
    parser.add_argument("--new", default="HEAD", help="commit, or 'worktree' for this checkout")
    parser.add_argument("--problems", default="abd")
    parser.add_argument("--solvers", default=",".join(SOLVERS))
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds (after 1 warm-up)")
    parser.add_argument(
        "--restarts", type=int, default=1,
        help="worker pairs, one after the other, each with its warm-up round: a process's own "
        "bias (memory layout, core) averages out over pairs (default 1)",
    )  # fmt: skip
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--broyden-memory", type=int, default=30, help="both sides (default 30)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ab_refactor.md")
    parser.add_argument("--append", action="store_true", help="add the table to --out")
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.worker, args.tol, args.broyden_memory)
        return 0
    configs = [(p, s) for p in args.problems for s in args.solvers.split(",")]
    load_start, wall = _load(), time.perf_counter()
    sides = []
    try:
        sides = [
            Side(name, spec, args.tol, args.broyden_memory)
            for name, spec in (("old", args.old), ("new", args.new))
        ]
        times = {(c, side.name, kind): [] for c in configs for side in sides for kind in KINDS}
        first = {}
        # Rounds of each worker pair; round 0 of a pair is its warm-up, not timed.
        schedule = [
            r
            for pair in range(args.restarts)
            for r in range(
                1 + args.rounds * (pair + 1) // args.restarts - args.rounds * pair // args.restarts
            )
        ]
        for step, rnd in enumerate(schedule):
            if rnd == 0 and step:
                for side in sides:
                    side.stop()
                    side.start()
            for i, config in enumerate(configs):
                order = sides if (step + i) % 2 == 0 else sides[::-1]
                for side in order:
                    reply = side.solve(*config)
                    seen = first.setdefault((config, side.name), reply)
                    if reply["nfev"] != seen["nfev"]:
                        raise RuntimeError(f"{side.name} {config}: nfev changed between rounds")
                    if rnd:
                        for kind in KINDS:
                            times[(config, side.name, kind)].append(reply[kind])
            print(f"round {step}/{len(schedule)} done, load {_load()}", flush=True)
    finally:
        for side in sides:
            side.close()
    rows = []
    for config in configs:
        row = {
            "problem": config[0],
            "solver": config[1],
            **{
                f"{k}_{side}": first[(config, side)][k]
                for k in ("nfev", "residual")
                for side in ("old", "new")
            },
        }
        for kind in KINDS:
            old, new = times[(config, "old", kind)], times[(config, "new", kind)]
            row[f"{kind}_min_old"], row[f"{kind}_min_new"] = min(old), min(new)
            # Each round's two runs ran seconds apart, under the same load: their ratio.
            row[f"{kind}_paired"] = statistics.median(b / a for a, b in zip(old, new, strict=True))
        rows.append(row)
    env = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "old": f"{args.old} ({sides[0].commit})",
        "new": f"{args.new} ({sides[1].commit})",
        "rounds": args.rounds,
        "restarts": args.restarts,
        "broyden_memory": args.broyden_memory,
        "load_start": load_start,
        "load_end": _load(),
        "seconds": round(time.perf_counter() - wall),
        "cpus": os.cpu_count(),
        "torch": sides[0].info["torch"],
        "command": "python benchmarks/ab_refactor.py " + " ".join(argv or sys.argv[1:]),
    }
    text = _table(rows, env)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.append and args.out.is_file():
        text = args.out.read_text() + "\n" + text.replace("# A/B", "## A/B", 1)
    args.out.write_text(text)
    return 0


def _table(rows: list[dict], env: dict) -> str:
    lines = [
        "# A/B: torch solvers before and after the core refactor (issue 10)",
        "",
        f"`{env['command'].strip()}` — {env['date']}, old = {env['old']}, new = {env['new']}; "
        f"1 thread per side, {env['rounds']} timed rounds over {env['restarts']} worker "
        "pair(s), each pair after a warm-up round, sides alternating, "
        f"Broyden memory {env['broyden_memory']} on both sides; "
        f"torch {env['torch']}, {env['cpus']} CPUs shared with other jobs "
        f"(load average {env['load_start']} at the start, {env['load_end']} at the end), "
        f"{env['seconds']} s.",
        "",
        "| problem | solver | nfev old/new | residual old / new | wall min old / new ms "
        "| wall min new/old | wall paired new/old | CPU min old / new ms | **CPU min new/old** "
        "| CPU paired new/old |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        same = "" if r["nfev_old"] == r["nfev_new"] else " **(differs)**"
        cells = [
            f"({r['problem']})",
            r["solver"],
            f"{r['nfev_old']}/{r['nfev_new']}{same}",
            f"{r['residual_old']:.2e} / {r['residual_new']:.2e}",
        ]
        for kind in KINDS:
            old, new = 1e3 * r[f"{kind}_min_old"], 1e3 * r[f"{kind}_min_new"]
            ratio = f"{new / old:.3f}"
            cells += [
                f"{old:.1f} / {new:.1f}",
                f"**{ratio}**" if kind == "cpu" else ratio,
                f"{r[f'{kind}_paired']:.3f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Ratios below 1 mean the new tree is faster. Times are of one `dk.solve` call inside its "
        "worker (no IPC). *min*: the least disturbed of the rounds; *paired*: the median over "
        "rounds of new/old, the two runs of a round being seconds apart. The CPU time "
        "(`time.process_time`) leaves out the time a worker waited for a core on the shared "
        "machine, so on a loaded machine it is the column to read.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
