"""Small loop helpers shared by the JAX solvers and the two iteration loops."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ...core import Status, stop_residual


def measure(z: jax.Array, fz: jax.Array, stop_mode: str):
    """Per sample ``(‖f(z) − z‖, ‖f(z)‖, the residual stop_mode compares with tol)``; the
    second is floored at the dtype's smallest normal number."""
    abs_res = jnp.linalg.norm(fz - z, axis=1)
    scale = jnp.maximum(jnp.linalg.norm(fz, axis=1), jnp.finfo(fz.dtype).tiny)
    return abs_res, scale, stop_residual(stop_mode, abs_res, scale)


def status_of(converged: jax.Array, nonfinite: jax.Array, diverged: jax.Array) -> jax.Array:
    """The batch's int32 status code from per-sample flags, worst first."""
    return jnp.where(
        jnp.any(nonfinite),
        int(Status.NONFINITE),
        jnp.where(
            jnp.any(diverged),
            int(Status.DIVERGED),
            jnp.where(jnp.all(converged), int(Status.CONVERGED), int(Status.MAX_ITER)),
        ),
    ).astype(jnp.int32)


def run_loop(running, body, carry, max_iter: int, unroll: bool, first: int = 2):
    """``while running(c): c = body(c)`` for iterations ``first``..max_iter: a ``while_loop``,
    or with ``unroll`` a static-length ``fori_loop`` that reverse-mode autodiff can pass
    through."""
    if unroll:
        return jax.lax.fori_loop(
            first - 1, max_iter, lambda _, c: jax.lax.cond(running(c), body, lambda c: c, c), carry
        )
    return jax.lax.while_loop(running, body, carry)


def bounded_loop(length: int, keep_going, body, carry):
    """``while keep_going(carry): carry = body(carry)``, at most ``length`` times.

    Written as a static-length ``fori_loop`` whose finished iterations are skipped by
    ``lax.cond``, so reverse-mode autodiff can pass through it (a ``while_loop`` refuses).
    """
    return jax.lax.fori_loop(
        0, length, lambda _, c: jax.lax.cond(keep_going(c), body, lambda c: c, c), carry
    )


def bounded_step_search(fn, z, fz, direction, active, max_halvings: int, armijo: float = 1e-4):
    """Per-sample backtracking on ‖f(z) − z‖: halve a sample's step while it fails to decrease.

    The twin of ``deqkit.solvers._buffers.bounded_step_search``. Returns ``(z_new, fz_new,
    nfev)``; each trial evaluates f on the whole batch (f may couple samples).
    """
    g_norm = jnp.linalg.norm(fz - z, axis=1)
    z_new = z + direction
    carry = (jnp.ones_like(g_norm), z_new, fn(z_new), jnp.asarray(1, jnp.int32))

    def bad(c):
        scale, z_new, fz_new, _ = c
        new_norm = jnp.linalg.norm(fz_new - z_new, axis=1)
        return active & ~(new_norm <= (1.0 - armijo * scale) * g_norm)

    def halve(c):
        is_bad = bad(c)
        scale, z_new, fz_new, nfev = c
        scale = jnp.where(is_bad, scale * 0.5, scale)
        z_try = z + scale[:, None] * direction
        f_try = fn(z_try)
        z_new = jnp.where(is_bad[:, None], z_try, z_new)
        fz_new = jnp.where(is_bad[:, None], f_try, fz_new)
        return scale, z_new, fz_new, nfev + 1

    _, z_new, fz_new, nfev = bounded_loop(max_halvings, lambda c: jnp.any(bad(c)), halve, carry)
    return z_new, fz_new, nfev
