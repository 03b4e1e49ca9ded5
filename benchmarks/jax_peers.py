"""The peers of the JAX section, each called with its own defaults on the benchmark's f.

jaxopt 0.8.5 (FixedPointIteration, AndersonAcceleration, Broyden on g(z) = f(z) − z) and
optimistix 0.1.0 (fixed_point with FixedPointIteration; it has no Anderson or Broyden). Each takes
an absolute tolerance on ‖f(z) − z‖ (two-norm). "batch": the whole batch is one vector; "sample":
the peer is vmapped over samples, each a (1, D) problem. banax 0.1.5 is not here: every release
requires Python >= 3.12, and deqkit's environment runs Python 3.11.
"""

from __future__ import annotations

import importlib.metadata

import jax
import jaxopt
import optimistix as optx


def versions() -> dict:
    return {n: importlib.metadata.version(n) for n in ("jaxopt", "optimistix", "lineax", "equinox")}


def _per_mode(solve, mode):
    """``run(params, z0, x) -> (z, nfev)`` on the whole batch or vmapped per sample."""
    if mode == "batch":
        return solve

    def run(p, z0, x):
        z, nfev = jax.vmap(lambda z, x: solve(p, z[None], x[None]))(z0, x)
        return z[:, 0], nfev

    return run


def configs(apply, abs_tol, max_iter, mode):
    """``[(library, solver, make)]``; ``make()`` returns a fresh ``run(params, z0, x)``."""

    def jaxopt_run(solver_class, root: bool = False):
        # jaxopt's fixed-point solvers take the map f; its Broyden takes the root function f - z.
        def fun(z, p, x):
            return apply(p, z, x) - z if root else apply(p, z, x)

        def run(p, z0, x):
            s = solver_class(fun, maxiter=max_iter, tol=abs_tol, implicit_diff=False)
            out = s.run(z0, p, x)
            return out.params, out.state.num_fun_eval

        return run

    fp = jaxopt_run(jaxopt.FixedPointIteration)
    anderson = jaxopt_run(jaxopt.AndersonAcceleration)
    broyden = jaxopt_run(jaxopt.Broyden, root=True)

    def optx_fp(p, z0, x):
        solver = optx.FixedPointIteration(rtol=0.0, atol=abs_tol, norm=optx.two_norm)
        sol = optx.fixed_point(
            lambda z, a: apply(p, z, x), solver, z0, max_steps=max_iter, throw=False
        )
        return sol.value, sol.stats["num_steps"] + 1

    return [
        ("jaxopt", "fixed_point", lambda: _per_mode(fp, mode)),
        ("optimistix", "fixed_point", lambda: _per_mode(optx_fp, mode)),
        ("jaxopt", "anderson", lambda: _per_mode(anderson, mode)),
    ] + (
        # vmapped, jaxopt's line-searching Broyden takes minutes per solve on (a) (452
        # f-evaluations on the whole batch without reaching tol): batch mode only.
        [("jaxopt", "broyden", lambda: _per_mode(broyden, mode))] if mode == "batch" else []
    )
