"""A/B of deqkit.jax Broyden: the solver file at git revision ``--old`` vs the working tree's,
with torch's Broyden and JAX Anderson in the same alternating rounds (process CPU seconds).

``python benchmarks/jax_ab_broyden.py --problem a --rounds 7 --old 416b8e7~1`` prints min times,
ratios, f-evaluations, the largest difference of the returned z, and the number of full-history
copies in each compiled solve (XLA's optimised HLO).
"""

from __future__ import annotations

import os

os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import jax_bench  # noqa: E402
import jax_problems  # noqa: E402

import deqkit as dk  # noqa: E402
import deqkit.jax as dkj  # noqa: E402

SOLVER_FILE = "src/deqkit/jax/solvers/broyden.py"


def load_old(rev: str):
    """The Broyden class of ``SOLVER_FILE`` at ``rev``, its relative imports made absolute."""
    text = subprocess.run(
        ["git", "show", f"{rev}:{SOLVER_FILE}"],
        cwd=HERE.parent,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    text = text.replace("from ...core", "from deqkit.core")
    text = re.sub(r"from \.(\w+)", r"from deqkit.jax.solvers.\1", text)
    path = Path(tempfile.mkdtemp()) / "old_broyden.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("old_broyden", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_broyden"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.Broyden


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", default="a")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--old", default="416b8e7~1")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    old_cls = load_old(args.old)
    apply, params, x, z0, prob = jax_problems.make(args.problem)
    inputs = (params, z0, x)
    runs, outs, copies = {}, {}, {}
    for upd in ("bad", "good"):
        for name, solver in (("old", old_cls(update=upd)), ("new", dkj.Broyden(update=upd))):
            make = jax_bench.deqkit_solve(apply, solver, 1e-4, prob.max_iter, "sample")
            _, compiled = jax_bench.compile_seconds(make, inputs)
            outs[name, upd] = compiled(*inputs)
            runs[f"jax {name} {upd}"] = lambda c=compiled: c(*inputs)
            history = rf"f32\[{z0.shape[0]},\d{{2,}},{z0.shape[1]}\]\{{[0-9,]*\}} copy\("
            copies[name, upd] = len(re.findall(history, compiled.as_text()))

        def run_torch(upd=upd):
            with torch.no_grad():
                dk.solve(
                    prob.f,
                    prob.z0,
                    dk.Broyden(update=upd),
                    tol=1e-4,
                    max_iter=prob.max_iter,
                    on_failure="ignore",
                )

        run_torch()
        runs[f"torch {upd}"] = run_torch
    make = jax_bench.deqkit_solve(apply, "anderson", 1e-4, prob.max_iter, "sample")
    anderson = jax_bench.compile_seconds(make, inputs)[1]
    anderson(*inputs)
    runs["jax anderson"] = lambda: anderson(*inputs)
    load = os.getloadavg()[0]
    best = jax_bench.interleaved(runs, args.rounds)
    print(
        f"({args.problem}) load {load:.1f} -> {os.getloadavg()[0]:.1f}, {args.rounds} rounds,"
        " min CPU ms"
    )
    for key, seconds in best.items():
        print(f"  {key:16s} {seconds * 1e3:8.2f}")
    for upd in ("bad", "good"):
        (zo, no), (zn, nn) = outs["old", upd], outs["new", upd]
        diff = np.abs(np.asarray(zo) - np.asarray(zn)).max()
        new = best[f"jax new {upd}"]
        print(
            f"  {upd}: nfev old {int(no)} new {int(nn)}, max |z_new - z_old| {diff:.1e}, "
            f"new/old {new / best[f'jax old {upd}']:.2f}, new/torch "
            f"{new / best[f'torch {upd}']:.2f}, history copies in HLO old "
            f"{copies['old', upd]} new {copies['new', upd]}"
        )
    return 0


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", False)
    sys.exit(main())
