"""Warm starts across training steps: a store of fixed points keyed by sample index.

When the same samples come back every epoch (implicit neural representations, per-pixel fields,
optical-flow sequences), last epoch's fixed point is an excellent z0 (Huang, Bai, Kolter,
"(Implicit)²", NeurIPS 2021; Bai et al., DEQ-Flow, CVPR 2022): solves shrink to a few iterations.
"""

from __future__ import annotations

from typing import Any

import torch

from ._compat import pytree
from ._validate import check_int

__all__ = ["FixedPointCache"]


def _as_index(index: Any, size: int) -> torch.Tensor:
    index = torch.as_tensor(index)
    if index.dtype == torch.bool or index.is_floating_point() or index.dim() != 1:
        raise TypeError(f"index must be a 1-D integer tensor of sample indices, got {index!r:.80}")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= size):
        raise ValueError(f"sample indices must lie in [0, {size}), got {index.tolist()!r:.80}")
    return index.long()


class FixedPointCache:
    """Fixed points of ``size`` samples; unseen samples fall back to a given initial state.

    Args:
        size: number of distinct samples (indices run over ``range(size)``).

    Storage is allocated on the first :meth:`put`, on that state's device and dtype. Stored
    states are detached: a warm start never carries gradient into the next step.

    >>> import deqkit as dk
    >>> cache = dk.FixedPointCache(size=10)
    >>> idx = torch.tensor([3, 7])
    >>> z0 = cache.get(idx, default=torch.zeros(2, 4))      # nothing stored yet: the default
    >>> cache.put(idx, torch.ones(2, 4))
    >>> cache.get(torch.tensor([7, 1]), default=torch.zeros(2, 4))[:, 0].tolist()
    [1.0, 0.0]
    """

    def __init__(self, size: int):
        self.size = check_int("size", size, minimum=1)
        self._spec: pytree.TreeSpec | None = None
        self._store: list[torch.Tensor] = []
        self._filled: torch.Tensor | None = None

    def __len__(self) -> int:
        """Number of samples stored so far."""
        return 0 if self._filled is None else int(self._filled.sum())

    def clear(self) -> None:
        """Forget every stored state (e.g. after a large change of the weights)."""
        self._spec, self._store, self._filled = None, [], None

    def put(self, index: Any, state: Any) -> None:
        """Store ``state`` (tensor or pytree, batch in dim 0) for the samples ``index``."""
        leaves, spec = pytree.tree_flatten(state)
        index = _as_index(index, self.size)
        if not leaves or any(leaf.shape[0] != index.numel() for leaf in leaves):
            raise ValueError(f"state batch must match the {index.numel()} indices given")
        if self._spec is None:
            self._spec = spec
            self._store = [leaf.new_zeros((self.size, *leaf.shape[1:])) for leaf in leaves]
            self._filled = torch.zeros(self.size, dtype=torch.bool, device=leaves[0].device)
        elif spec != self._spec or any(
            leaf.shape[1:] != store.shape[1:]
            for leaf, store in zip(leaves, self._store, strict=True)
        ):
            raise ValueError("state structure or shapes differ from the states already stored")
        for leaf, store in zip(leaves, self._store, strict=True):
            store[index.to(store.device)] = leaf.detach().to(store.dtype)
        filled = self._filled
        assert filled is not None  # allocated by the first put
        filled[index.to(filled.device)] = True

    def get(self, index: Any, default: Any) -> Any:
        """Stored states for ``index`` where present, ``default`` (same structure) elsewhere."""
        index = _as_index(index, self.size)
        if self._spec is None:
            return default
        leaves, spec = pytree.tree_flatten(default)
        if spec != self._spec:
            raise ValueError("default has a different structure from the states stored")
        filled = self._filled
        assert filled is not None  # allocated with the structure
        hit = filled[index.to(filled.device)]
        out = []
        for leaf, store in zip(leaves, self._store, strict=True):
            cached = store[index.to(store.device)].to(device=leaf.device, dtype=leaf.dtype)
            mask = hit.to(leaf.device).view(-1, *([1] * (leaf.dim() - 1)))
            out.append(torch.where(mask, cached, leaf))
        return pytree.tree_unflatten(out, spec)
