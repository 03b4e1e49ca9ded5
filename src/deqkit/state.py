"""Pytree states <-> one (B, D) tensor.

Solvers work on a single (batch, features) matrix. A DEQ state may be a tensor or any nesting of
tuples, lists and dicts of tensors (multiscale models carry one tensor per resolution); dim 0 of
every leaf is the batch. :func:`flatten` packs a state, :class:`StateSpec` remembers how to unpack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ._compat import pytree

__all__ = ["StateSpec", "flatten", "solver_dtype"]


def solver_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype solver arithmetic runs in: float32 at least, so half precision stays stable.

    >>> solver_dtype(torch.bfloat16), solver_dtype(torch.float64)
    (torch.float32, torch.float64)
    """
    if not dtype.is_floating_point:
        raise TypeError(f"DEQ states must be floating point, got dtype {dtype}")
    return torch.promote_types(dtype, torch.float32)


@dataclass(frozen=True)
class StateSpec:
    """How a (B, D) matrix maps back to the caller's state structure."""

    treespec: Any
    shapes: tuple[torch.Size, ...]
    dtypes: tuple[torch.dtype, ...]
    batch: int

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(math.prod(s[1:]) for s in self.shapes)

    @property
    def width(self) -> int:
        return sum(self.sizes)

    def unflatten(self, flat: torch.Tensor) -> Any:
        """Split a (B, D) matrix back into the state structure (views where possible)."""
        if len(self.shapes) == 1:
            leaves = [flat.reshape(self.shapes[0]).to(self.dtypes[0])]
        else:
            parts = torch.split(flat, list(self.sizes), dim=1)
            leaves = [
                p.reshape(s).to(d) for p, s, d in zip(parts, self.shapes, self.dtypes, strict=True)
            ]
        return pytree.tree_unflatten(leaves, self.treespec)

    def flatten_like(self, state: Any, what: str = "f(z)", cast: bool = False) -> torch.Tensor:
        """Flatten ``state``, raising if its structure, shapes or dtypes differ from this spec.

        ``cast=True`` accepts other floating dtypes (f under autocast) and converts them.
        """
        leaves, treespec = pytree.tree_flatten(state)
        if treespec != self.treespec:
            raise ValueError(
                f"{what} must have the same structure as z: "
                f"expected {self.treespec}, got {treespec}"
            )
        for i, (leaf, shape, dtype) in enumerate(
            zip(leaves, self.shapes, self.dtypes, strict=True)
        ):
            if not isinstance(leaf, torch.Tensor):
                raise TypeError(f"{what} leaf {i} must be a tensor, got {type(leaf).__name__}")
            if leaf.shape != shape:
                raise ValueError(
                    f"{what} leaf {i} has shape {tuple(leaf.shape)} but z has {tuple(shape)}"
                )
            if leaf.dtype != dtype and not (cast and leaf.dtype.is_floating_point):
                raise TypeError(f"{what} leaf {i} has dtype {leaf.dtype} but z has {dtype}")
        return _pack(leaves, self.batch)


def _pack(leaves: list[torch.Tensor], batch: int) -> torch.Tensor:
    dtype = solver_dtype(leaves[0].dtype)
    for leaf in leaves[1:]:
        dtype = torch.promote_types(dtype, leaf.dtype)
    # The per-sample width from the shape, not -1: an empty batch (batch 0) has no -1 to infer.
    mats = [leaf.reshape(batch, math.prod(leaf.shape[1:])).to(dtype) for leaf in leaves]
    return mats[0] if len(mats) == 1 else torch.cat(mats, dim=1)


def flatten(state: Any, what: str = "z0") -> tuple[torch.Tensor, StateSpec]:
    """Pack a tensor or pytree of tensors into one (B, D) matrix and its :class:`StateSpec`.

    Args:
        state: a tensor or nested tuple/list/dict of tensors, batch in dim 0 of every leaf.
        what: the argument's name, used in error messages.

    Returns:
        ``(flat, spec)`` with ``spec.unflatten(flat)`` equal to ``state``.

    >>> flat, spec = flatten((torch.ones(2, 3), torch.zeros(2, 1, 2)))
    >>> flat.shape, spec.unflatten(flat)[1].shape
    (torch.Size([2, 5]), torch.Size([2, 1, 2]))
    """
    leaves, treespec = pytree.tree_flatten(state)
    if not leaves:
        raise ValueError(f"{what} must contain at least one tensor")
    for i, leaf in enumerate(leaves):
        if not isinstance(leaf, torch.Tensor):
            raise TypeError(f"{what} leaf {i} must be a tensor, got {type(leaf).__name__}")
        if leaf.dim() == 0:
            raise ValueError(f"{what} leaf {i} is a scalar; every leaf needs a batch dimension 0")
    batch = leaves[0].shape[0]
    devices = {leaf.device for leaf in leaves}
    if len(devices) > 1:
        raise ValueError(f"{what} leaves lie on several devices: {sorted(map(str, devices))}")
    for i, leaf in enumerate(leaves):
        if leaf.shape[0] != batch:
            raise ValueError(
                f"{what} leaf {i} has batch size {leaf.shape[0]}, leaf 0 has {batch}; "
                "dim 0 of every leaf is the batch"
            )
        solver_dtype(leaf.dtype)
    spec = StateSpec(
        treespec,
        tuple(leaf.shape for leaf in leaves),
        tuple(leaf.dtype for leaf in leaves),
        batch,
    )
    return _pack(leaves, batch), spec
