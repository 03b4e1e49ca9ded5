"""The loop of ``stop_scope="batch"``: the whole batch solved as one system, stopped together.

Twin of ``deqkit.solvers._batch_loop``. For f that couples samples the batch is one fixed-point
problem with B·D unknowns: the solver sees a (1, B·D) matrix, so its weights, secant estimate
or Krylov space cover the coupling; f and the stopping rule see the (B, D) batch. The loop stops
when every sample meets ``tol`` at the same iterate, when a sample turns NaN/Inf or diverges, or
at ``max_iter``; the returned z is the iterate with the smallest worst-sample residual, whose
residuals come from one evaluation of f on it (evaluated again only if the solver mixes rows).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._loops import measure, run_loop, status_of
from .solution import Solution, StatusCode


def iterate_batch(
    solver, fn, z0, *, tol, max_iter, stop_mode, trace, divergence_ratio, unroll, keep_state
) -> Solution:
    """:func:`~deqkit.jax.solvers.iterate` with ``stop_scope="batch"`` (options checked there).

    >>> import jax.numpy as jnp
    >>> import deqkit.jax as dkj
    >>> f = lambda z: 0.5 * z + 0.4 * z.mean(0, keepdims=True) + 1.0  # couples the samples
    >>> sol = iterate_batch(dkj.Anderson(), f, jnp.zeros((3, 2)), tol=1e-8, max_iter=50,
    ...                     stop_mode="rel", trace=False, divergence_ratio=1e8, unroll=False,
    ...                     keep_state=False)
    >>> sol.status.name, sol.nstep.tolist() == [int(sol.nstep[0])] * 3
    ('CONVERGED', True)
    """
    shape = z0.shape
    batch = shape[0]

    def evaluate(flat):
        return fn(flat.reshape(shape)).reshape(1, -1)

    def residuals(flat, f_flat):
        return measure(flat.reshape(shape), f_flat.reshape(shape), stop_mode)

    z = z0.reshape(1, -1)
    dtype = jax.eval_shape(residuals, z, z)[2].dtype
    nan = jnp.full(batch, jnp.nan, dtype)
    no = jnp.zeros(batch, bool)
    # The state before the first evaluation; record() turns it into the state after it, the
    # same code as every later iteration's bookkeeping.
    blank = {
        "k": jnp.asarray(0, jnp.int32),
        "z": z,
        "fz": z,
        "memory": solver.empty(z) if solver.starts_in_loop else None,
        "best": (z, nan, nan, nan),
        "worst": jnp.asarray(jnp.nan, dtype),
        "diverge_at": nan,
        "nonfinite": no,
        "diverged": no,
        "done": jnp.asarray(False),
        "nfev": jnp.asarray(0, jnp.int32),
        "history": jnp.full((batch, max_iter), jnp.nan, dtype) if trace else None,
    }
    one = jnp.ones(1, bool)

    def record(c, z_new, fz_new, memory, nfev):
        k = c["k"] + 1
        first = k == 1
        abs_n, scale_n, res_n = residuals(z_new, fz_new)
        finite = jnp.isfinite(abs_n)
        tiny = jnp.finfo(abs_n.dtype).tiny
        diverge_at = jnp.where(first, divergence_ratio * jnp.maximum(abs_n, tiny), c["diverge_at"])
        diverged = finite & (abs_n > diverge_at)
        # Two reductions per iteration: the worst residual, NaN when any sample is NaN/Inf
        # (max propagates NaN), and whether any sample diverged.
        worst = jnp.max(jnp.where(finite, res_n, jnp.nan))
        better = (worst < c["worst"]) | first
        best = jax.tree.map(
            lambda new, old: jnp.where(better, new, old), (z_new, abs_n, scale_n, res_n), c["best"]
        )
        out = dict(c, k=k, z=z_new, fz=fz_new, memory=memory, best=best, nfev=c["nfev"] + nfev)
        out["worst"] = jnp.where(better, worst, c["worst"])
        out["diverge_at"] = diverge_at
        out["nonfinite"], out["diverged"] = ~finite, diverged
        out["done"] = jnp.isnan(worst) | jnp.any(diverged) | (worst <= tol)
        if trace:
            hist = c["history"]
            kept = jnp.where(finite | first, res_n, hist[:, k - 2])
            out["history"] = hist.at[:, k - 1].set(kept)
        return out

    if solver.starts_in_loop:
        carry = blank
    else:
        fz = evaluate(z)
        carry = record(blank, z, fz, solver.init(z, fz), jnp.asarray(1, jnp.int32))

    def running(c):
        return ~c["done"] & (c["k"] < max_iter)

    def body(c):
        return record(c, *solver.step(evaluate, c["z"], c["fz"], c["memory"], one))

    c = run_loop(running, body, carry, max_iter, unroll, first=1 if solver.starts_in_loop else 2)
    best_z, abs_r, scale, res = c["best"]
    nonfinite, nfev = c["nonfinite"], c["nfev"]
    if solver.mixes_rows:
        # A line search mixed rows of several evaluations: check f at the returned z.
        def recheck(_):
            abs_f, scale_f, res_f = residuals(best_z, evaluate(best_z))
            return abs_f, scale_f, res_f, nonfinite | ~jnp.isfinite(abs_f), nfev + 1

        kept = (abs_r, scale, res, nonfinite, nfev)
        abs_r, scale, res, nonfinite, nfev = jax.lax.cond(c["k"] > 1, recheck, lambda _: kept, None)
    converged = jnp.isfinite(abs_r) & (res <= tol)
    return Solution(
        z=best_z.reshape(shape),
        status=StatusCode(status_of(converged, nonfinite, c["diverged"])),
        converged=converged,
        nstep=jnp.full(shape[0], c["k"], jnp.int32),
        residual=res,
        abs_residual=abs_r,
        rel_residual=abs_r / scale,
        nfev=nfev,
        trace=c["history"],
        state=solver.final_state(c["memory"]) if keep_state else None,
        stop_mode=stop_mode,
        tol=float(tol),
    )
