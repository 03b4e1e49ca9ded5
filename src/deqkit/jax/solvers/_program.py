"""f as a program whose constants are all arguments, and the compile cache keyed on its text.

``dkj.solve`` called eagerly traces f to a jaxpr on every call. Two calls with the same f (and
the same shapes) give the same jaxpr text, so the compiled solve can be reused; and because every
array f closes over, concrete weights included, travels as an argument, the compiled program
never holds a weight as a constant (XLA would spend seconds constant-folding ``W @ x`` with it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax

from .._compat import ClosedJaxpr, jaxpr_as_fun

__all__ = ["Program", "cached_jit"]


class Program:
    """``fn(z, *consts)`` from a traced ``f(z)``: every constant of its jaxpr is an argument.

    Equal (and hashing alike) when the jaxpr text is equal, so it serves as a static argument
    whose compiled users are reused across calls.

    The constants' values are not part of it (:meth:`lift` hands them back apart), so a cached
    program keeps no weights alive.

    >>> import jax, jax.numpy as jnp
    >>> w = jnp.ones(3)
    >>> p, consts = Program.lift(jax.make_jaxpr(lambda z: z * w)(jnp.zeros(3)))
    >>> q, _ = Program.lift(jax.make_jaxpr(lambda z: z * w)(jnp.zeros(3)))
    >>> p == q, len(consts), p(jnp.ones(3), 2 * w).tolist()
    (True, 1, [2.0, 2.0, 2.0])
    """

    __slots__ = ("_key", "jaxpr")

    def __init__(self, jaxpr: Any):
        self.jaxpr = jaxpr
        self._key = str(jaxpr)

    @classmethod
    def lift(cls, closed: Any) -> tuple[Program, tuple]:
        """``(program, consts)`` from a ``ClosedJaxpr`` of ``f(z)``."""
        return cls(closed.jaxpr), tuple(closed.consts)

    def __call__(self, z: jax.Array, *consts: Any) -> jax.Array:
        return jaxpr_as_fun(ClosedJaxpr(self.jaxpr, list(consts)))(z)[0]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Program) and other._key == self._key

    def __hash__(self) -> int:
        return hash(self._key)


@functools.lru_cache(maxsize=128)
def cached_jit(build: Callable, *static: Any) -> Callable:
    """``jax.jit(build(*static))``, built once per distinct (hashable) ``static`` tuple."""
    return jax.jit(build(*static))
