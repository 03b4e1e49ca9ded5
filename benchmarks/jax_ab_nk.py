"""Time deqkit.jax's Newton–Krylov on problem (a) or (d) (krylov_dim 10 and 20), min of 9 runs,
process CPU seconds, one XLA thread. For an old/new A/B run it in alternating processes, once
with an older checkout first on the path:

``git archive REV src/deqkit | tar -x -C OLD; PYTHONPATH=OLD/src python benchmarks/jax_ab_nk.py a``
"""

from __future__ import annotations

import os

os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax_problems  # noqa: E402

import deqkit.jax as dkj  # noqa: E402


def main(key: str) -> None:
    apply, params, x, z0, prob = jax_problems.make(key)
    for dim in (10, 20):
        solver = dkj.NewtonKrylov(krylov_dim=dim)

        def run(p, z0, x, solver=solver):
            f = lambda z: apply(p, z, x)  # noqa: E731
            return dkj.solve(f, z0, solver, tol=1e-4, max_iter=prob.max_iter, on_failure="ignore")

        run = jax.jit(run)
        sol = run(params, z0, x)
        best = float("inf")
        for _ in range(9):
            start = time.process_time()
            jax.block_until_ready(run(params, z0, x).z)
            best = min(best, time.process_time() - start)
        fz = apply(params, sol.z, x)
        res = jnp.max(jnp.linalg.norm(fz - sol.z, axis=1) / jnp.linalg.norm(fz, axis=1))
        print(
            f"({key}) krylov_dim {dim}: {best * 1e3:.1f} ms CPU  nfev {int(sol.nfev)}  "
            f"status {sol.status.name}  max rel residual {float(res):.3e}"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "a")
