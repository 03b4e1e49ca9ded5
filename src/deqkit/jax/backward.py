"""How gradients pass through z* = f(z*) in JAX: the twins of :mod:`deqkit.backward`.

Each strategy is a frozen dataclass of its options with one method,
``attach(fn, z_star, consts, on_failure)``. ``fn(z, *consts)`` is f after closure conversion
(``jax.closure_convert``): every array f closes over that could carry a gradient is an explicit
argument, so a custom derivative rule can pass derivatives to it. ``z_star`` comes from a solve
that saw only ``stop_gradient`` copies of ``consts`` and of z0, so no gradient ever reaches z0.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import jax
import jax.numpy as jnp

from ..core import (
    BACKWARD_OPTIONS,
    ImplicitOptions,
    OneStepOptions,
    PhantomOptions,
    UnrolledOptions,
    convert,
)
from ._failure import report_failure
from .solvers import iterate, make_solver

__all__ = ["BACKWARDS", "Backward", "Implicit", "OneStep", "Phantom", "Unrolled", "make_backward"]


class Backward:
    """Interface: ``attach(fn, z_star, consts, on_failure)`` returns z* carrying gradients."""

    name: ClassVar[str]
    unrolls_solver: ClassVar[bool] = False

    def attach(self, fn, z_star: jax.Array, consts: tuple, on_failure: str) -> jax.Array:
        raise NotImplementedError


@dataclass(frozen=True)
class Implicit(ImplicitOptions, Backward):
    """Exact implicit (IFT) gradients through a matrix-free adjoint solve u = g + Jᵀu.

    The output is z* itself, a ``jax.custom_jvp`` whose rule is the implicit function theorem
    with a ``jax.lax.custom_linear_solve``: reverse mode solves the adjoint fixed point
    u = g + Jᵀu at z* and passes u on to f's parameters and inputs; forward mode (``jax.jvp``,
    ``jax.jacfwd``) solves the tangent fixed point t = Jt + ∂f/∂θ·dθ. Both solves use these
    options. Derivatives of any order (``jax.hessian``, ``jax.grad`` of ``jax.grad``) are exact
    up to the solves' tolerances, because the rule's own derivatives are again linear solves.

    Args:
        solver: solver for the adjoint fixed point (name or object).
        tol: adjoint tolerance, in ``stop_mode``.
        max_iter: adjoint iteration budget.
        stop_mode: "rel" or "abs".

    >>> import jax, jax.numpy as jnp
    >>> import deqkit.jax as dkj
    >>> def z_of(w):
    ...     z, _ = dkj.fixed_point(lambda z: w * z + 1.0, jnp.zeros((1, 1)), "fixed_point",
    ...                            backward=dkj.Implicit("fixed_point", tol=1e-7), tol=1e-7)
    ...     return z.sum()
    >>> round(float(jax.grad(z_of)(0.5)), 3)  # z* = 1/(1 - w), dz*/dw = 1/(1 - w)^2
    4.0
    """

    name: ClassVar[str] = "implicit"

    def __post_init__(self):
        object.__setattr__(self, "solver", make_solver(self.solver))
        super().__post_init__()

    def attach(self, fn, z_star, consts, on_failure):
        return _implicit(fn, self, on_failure, z_star, tuple(consts))


@partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def _implicit(fn, opts: Implicit, on_failure: str, z_star, consts):
    return z_star


@_implicit.defjvp
def _implicit_jvp(fn, opts, on_failure, primals, tangents):
    return _implicit_rule(fn, opts, on_failure, primals, tangents)


# Jitted so that an eager jax.grad runs the rule's linearisation as one compiled program.
@partial(jax.jit, static_argnums=(0, 1, 2))
def _implicit_rule(fn, opts, on_failure, primals, tangents):
    """The IFT as a forward rule: dz* = (I − J)⁻¹ (∂f/∂θ · dθ), a ``custom_linear_solve``.

    Reverse mode needs no rule of its own: JAX transposes this one, and the transpose of the
    linear solve is the adjoint solve u = g + Jᵀu (``transpose_solve``); the forward-mode solve
    runs only under ``jax.jvp``/``jax.jacfwd``. Every derivative of this rule is again a linear
    solve or a derivative of f, so derivatives of any order are exact to the solves' tolerance.
    """
    z_star, consts = primals
    _, d_consts = tangents
    # z* through _implicit again, not the raw z_star (a stop_gradient copy of the solver's
    # output): a derivative of this rule must see dz*/dθ too, or second derivatives lose the
    # term that passes through J(z*) (jax.hessian of z* = a z* + 2 gave 16 instead of 32).
    z = _implicit(fn, opts, on_failure, z_star, consts)
    diff = [i for i, c in enumerate(consts) if jnp.issubdtype(jnp.result_type(c), jnp.inexact)]

    def f_of(z, *values):
        full = list(consts)
        for i, value in zip(diff, values, strict=True):
            full[i] = value
        return fn(z, *full)

    # One linearisation of f at (z*, θ) serves both the operator J and the right-hand side.
    _, lin = jax.linearize(f_of, z, *(consts[i] for i in diff))
    no_params = [jnp.zeros_like(consts[i]) for i in diff]
    rhs = lin(jnp.zeros_like(z), *(d_consts[i] for i in diff))
    dz = jax.lax.custom_linear_solve(
        lambda v: v - lin(v, *no_params),
        rhs,
        solve=_linear_solve(opts, on_failure, "implicit tangent (forward-mode) solve"),
        transpose_solve=_linear_solve(opts, on_failure, "implicit backward (adjoint) solve"),
    )
    return z, dz


def _linear_solve(opts: Implicit, on_failure: str, what: str):
    """Solve (I − A) x = b as the fixed point x = b + A x with the adjoint solver's options.

    ``matvec`` is x ↦ x − Jx for the tangent solve and x ↦ x − Jᵀx (JAX's transpose of it)
    for the adjoint one; the solve itself is never differentiated (``custom_linear_solve``).
    """

    # fixed_point resolves a None tol/max_iter to the forward solve's before attaching.
    assert opts.tol is not None and opts.max_iter is not None, "unresolved Implicit options"
    tol, max_iter = opts.tol, opts.max_iter

    def solve(matvec, b):
        # One compiled program for the whole solve, also when the derivative runs eagerly.
        @jax.jit
        def run(b):
            return iterate(
                opts.solver,
                lambda x: b + x - matvec(x),
                b,
                tol=tol,
                max_iter=max_iter,
                stop_mode=opts.stop_mode,
            )

        sol = run(b)
        return report_failure(sol, on_failure, what, sol.z)

    return solve


@dataclass(frozen=True)
class Phantom(PhantomOptions, Backward):
    """Phantom gradient: differentiate k damped steps z ← (1 − τ)z + τf(z) taken from z*.

    Args:
        steps: k, the number of differentiated steps.
        damping: τ in (0, 1].

    >>> Phantom(steps=3, damping=0.5)
    Phantom(steps=3, damping=0.5)
    """

    name: ClassVar[str] = "phantom"

    def attach(self, fn, z_star, consts, on_failure):
        z = z_star
        for _ in range(self.steps):
            fz = fn(z, *consts)
            z = fz if self.damping == 1.0 else z + self.damping * (fz - z)
        return z


@dataclass(frozen=True)
class OneStep(OneStepOptions, Backward):
    """Jacobian-free backward: the gradient of one step f(z*) with z* held constant.

    >>> OneStep()
    OneStep()
    """

    name: ClassVar[str] = "one_step"

    def attach(self, fn, z_star, consts, on_failure):
        return fn(z_star, *consts)


@dataclass(frozen=True)
class Unrolled(UnrolledOptions, Backward):
    """Backpropagate through every forward iteration (the loop runs as a static-length scan).

    >>> Unrolled()
    Unrolled()
    """

    name: ClassVar[str] = "unrolled"
    unrolls_solver: ClassVar[bool] = True

    def attach(self, fn, z_star, consts, on_failure):
        return z_star


BACKWARDS: dict[str, type[Backward]] = {
    cls.name: cls for cls in (Implicit, Phantom, OneStep, Unrolled)
}


def make_backward(spec) -> Backward:
    """Turn a backward name, or a backward object of either backend, into a JAX backward.

    An object converts by its option record (:func:`deqkit.core.convert`), so one configuration
    serves both backends. "shine" has no JAX implementation and is rejected with that reason.

    >>> import deqkit as dk
    >>> make_backward(dk.Phantom(steps=3))
    Phantom(steps=3, damping=1.0)
    """
    if isinstance(spec, str) and spec in BACKWARD_OPTIONS and spec not in BACKWARDS:
        raise ValueError(f"backward {spec!r} is not available in deqkit.jax")
    return convert(spec, BACKWARDS, "backward", Backward)
