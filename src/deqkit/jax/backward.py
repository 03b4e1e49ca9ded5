"""How gradients pass through z* = f(z*) in JAX: the twins of :mod:`deqkit.backward`.

Each strategy is a frozen dataclass of its options with one method,
``attach(fn, z_star, consts, on_failure)``. ``fn(z, *consts)`` is f after closure conversion
(``jax.closure_convert``): every array f closes over that could carry a gradient is an explicit
argument, so a ``jax.custom_vjp`` can return cotangents for it. ``z_star`` comes from a solve that
saw only ``stop_gradient`` copies of ``consts`` and of z0, so no gradient ever reaches z0.
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
from .solvers import Solver, iterate, make_solver

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

    The output is z* itself; its custom VJP solves the adjoint fixed point with vector–Jacobian
    products of f at z* and passes u on to f's parameters and inputs.

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


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _implicit(fn, opts: Implicit, on_failure: str, z_star, consts):
    return z_star


def _implicit_fwd(fn, opts, on_failure, z_star, consts):
    return z_star, (z_star, consts)


def _implicit_bwd(fn, opts, on_failure, res, grad):
    z_star, consts = res
    back, grads = _adjoint(fn, opts, grad, z_star, consts)
    report_failure(back, on_failure, "implicit backward (adjoint) solve")
    # z_star entered as a stop_gradient copy, so its cotangent is exactly zero by construction.
    return jnp.zeros_like(z_star), grads


@partial(jax.jit, static_argnums=(0, 1))
def _adjoint(fn, opts: Implicit, grad, z_star, consts):
    """Solve u = g + Jᵀu at z* and return ``(solution, uᵀ ∂f/∂consts)`` in one compiled program."""
    _, vjp = jax.vjp(fn, z_star, *consts)
    solver: Solver = opts.solver
    back = iterate(
        solver,
        lambda u: grad + vjp(u)[0],
        grad,
        tol=opts.tol,
        max_iter=opts.max_iter,
        stop_mode=opts.stop_mode,
    )
    return back, tuple(vjp(back.z)[1:])


_implicit.defvjp(_implicit_fwd, _implicit_bwd)


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
