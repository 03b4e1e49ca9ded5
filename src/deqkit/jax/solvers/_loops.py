"""Small loop helpers shared by the JAX solvers."""

from __future__ import annotations

import jax
import jax.numpy as jnp


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
