"""Pytree states <-> one (B, D) array, the JAX twin of :mod:`deqkit.state`.

Solvers work on a single (batch, features) matrix. A state may be an array or any pytree of arrays
(tuples, lists, dicts, registered dataclasses); dim 0 of every leaf is the batch. Shapes and
dtypes are static, so flattening costs nothing at run time under ``jax.jit``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["StateSpec", "flatten", "solver_dtype"]


def solver_dtype(dtype: Any) -> np.dtype:
    """The dtype solver arithmetic runs in: float32 at least, so half precision stays stable.

    >>> import jax.numpy as jnp
    >>> str(solver_dtype(jnp.bfloat16)), str(solver_dtype(jnp.float32))
    ('float32', 'float32')
    """
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"DEQ states must be floating point, got dtype {dtype}")
    return jnp.promote_types(dtype, jnp.float32)


@dataclass(frozen=True)
class StateSpec:
    """How a (B, D) matrix maps back to the caller's state structure (all static)."""

    treedef: Any
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[Any, ...]
    batch: int

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(math.prod(s[1:]) for s in self.shapes)

    @property
    def width(self) -> int:
        return sum(self.sizes)

    def unflatten(self, flat: jax.Array) -> Any:
        """Split a (B, D) matrix back into the state structure."""
        cuts = np.cumsum(self.sizes)[:-1].tolist()
        parts = jnp.split(flat, cuts, axis=1) if cuts else [flat]
        leaves = [
            p.reshape(s).astype(d) for p, s, d in zip(parts, self.shapes, self.dtypes, strict=True)
        ]
        return jax.tree_util.tree_unflatten(self.treedef, leaves)

    def flatten_like(self, state: Any, what: str = "f(z)") -> jax.Array:
        """Flatten ``state``, raising if its structure, shapes or dtypes differ from this spec."""
        leaves, treedef = jax.tree_util.tree_flatten(state)
        if treedef != self.treedef:
            raise ValueError(
                f"{what} must have the same structure as z: expected {self.treedef}, got {treedef}"
            )
        specs = zip(leaves, self.shapes, self.dtypes, strict=True)
        for i, (leaf, shape, dtype) in enumerate(specs):
            if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
                raise TypeError(f"{what} leaf {i} must be an array, got {type(leaf).__name__}")
            if tuple(leaf.shape) != shape:
                raise ValueError(f"{what} leaf {i} has shape {tuple(leaf.shape)} but z has {shape}")
            if jnp.dtype(leaf.dtype) != dtype:
                raise TypeError(f"{what} leaf {i} has dtype {leaf.dtype} but z has {dtype}")
        return _pack(leaves, self.batch)


def _pack(leaves: list, batch: int) -> jax.Array:
    dtype = jnp.result_type(*[solver_dtype(leaf.dtype) for leaf in leaves])
    # The per-sample width from the shape, not -1: an empty batch (batch 0) has no -1 to infer.
    mats = [jnp.reshape(leaf, (batch, math.prod(leaf.shape[1:]))).astype(dtype) for leaf in leaves]
    return mats[0] if len(mats) == 1 else jnp.concatenate(mats, axis=1)


def flatten(state: Any, what: str = "z0") -> tuple[jax.Array, StateSpec]:
    """Pack an array or pytree of arrays into one (B, D) matrix and its :class:`StateSpec`.

    Args:
        state: an array or pytree of arrays, batch in dim 0 of every leaf.
        what: the argument's name, used in error messages.

    Returns:
        ``(flat, spec)`` with ``spec.unflatten(flat)`` equal to ``state``.

    >>> import jax.numpy as jnp
    >>> flat, spec = flatten((jnp.ones((2, 3)), jnp.zeros((2, 1, 2))))
    >>> flat.shape, spec.unflatten(flat)[1].shape
    ((2, 5), (2, 1, 2))
    """
    leaves, treedef = jax.tree_util.tree_flatten(state)
    if not leaves:
        raise ValueError(f"{what} must contain at least one array")
    leaves = [jnp.asarray(leaf) if isinstance(leaf, np.ndarray) else leaf for leaf in leaves]
    for i, leaf in enumerate(leaves):
        if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
            raise TypeError(f"{what} leaf {i} must be an array, got {type(leaf).__name__}")
        if leaf.ndim == 0:
            raise ValueError(f"{what} leaf {i} is a scalar; every leaf needs a batch dimension 0")
        solver_dtype(leaf.dtype)
    batch = leaves[0].shape[0]
    for i, leaf in enumerate(leaves):
        if leaf.shape[0] != batch:
            raise ValueError(
                f"{what} leaf {i} has batch size {leaf.shape[0]}, leaf 0 has {batch}; "
                "dim 0 of every leaf is the batch"
            )
    spec = StateSpec(
        treedef,
        tuple(tuple(leaf.shape) for leaf in leaves),
        tuple(jnp.dtype(leaf.dtype) for leaf in leaves),
        batch,
    )
    return _pack(leaves, batch), spec
