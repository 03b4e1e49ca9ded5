"""Re-time the JAX section's closest rows with more rounds: (a) per-sample fixed point (deqkit,
optimistix vmapped, the hand-written floor) and the B=1 D=32 fixed point (deqkit, jaxopt,
optimistix), all through ``jax.jit`` in alternating rounds, process CPU seconds, min over rounds.

``python benchmarks/jax_ab_rows.py --rounds 15``
"""

from __future__ import annotations

import os

os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax_bench  # noqa: E402
import jax_peers  # noqa: E402
import jax_problems  # noqa: E402


def _rows_a(tol):
    apply, params, x, z0, prob = jax_problems.make("a")
    ref = jax_bench.deqkit_solve(apply, "anderson", 1e-6, 300, "sample")()(params, z0, x)[0]
    abs_tol = tol * float(np.median(np.asarray(jnp.linalg.norm(apply(params, ref, x), axis=1))))
    peers = {
        lib: make
        for lib, s, make in jax_peers.configs(apply, abs_tol, prob.max_iter, "sample")
        if s == "fixed_point"
    }
    makes = {
        "(a) sample deqkit fixed_point": jax_bench.deqkit_solve(
            apply, "fixed_point", tol, prob.max_iter, "sample"
        ),
        "(a) sample optimistix fixed_point": peers["optimistix"],
        "(a) sample floor fixed_point": lambda: jax_bench.floor_fixed_point(
            apply, tol, prob.max_iter
        ),
    }
    return {k: (jax.jit(m()), (params, z0, x), 1) for k, m in makes.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--tol", type=float, default=1e-4)
    args = parser.parse_args(argv)
    import jax_extra  # noqa: PLC0415

    load = os.getloadavg()[0]
    rows = _rows_a(args.tol)
    for fn, a, _ in rows.values():
        jax.block_until_ready(fn(*a))
    best = jax_bench.interleaved(
        {k: (lambda f=f, a=a: f(*a)) for k, (f, a, _) in rows.items()}, args.rounds
    )
    small = jax_extra._small(args.tol, args.rounds)
    print(f"load {load:.1f} -> {os.getloadavg()[0]:.1f}, {args.rounds} rounds, CPU seconds")
    for k, t in best.items():
        print(f"  {k:36s} {t * 1e3:8.2f} ms")
    for k, v in small.items():
        print(f"  B=1 D=32 {k:27s} {v['time_s'] * 1e6:8.1f} us  compile {v['compile_s']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
