"""Variational dropout: one mask per DEQ call, shared by every solver iteration and the backward.

Ordinary dropout draws a new mask at each call of the cell, so f changes from one solver
iteration to the next and has no fixed point. A variational dropout module draws its mask on the
first call after :meth:`VariationalDropout.reset` and reuses it until the next reset;
:class:`~deqkit.DEQ` resets every such module inside itself at the start of each call.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ._validate import check_float, check_int

__all__ = [
    "VariationalDropout",
    "VariationalDropout2d",
    "VariationalDropoutToken",
    "reset_dropout",
]


class VariationalDropout(nn.Module):
    """Dropout whose mask stays fixed until :meth:`reset` (elementwise by default).

    Args:
        p: probability of zeroing an entry, in [0, 1). Kept entries are scaled by 1/(1 − p).
        shared_dims: input dimensions (never 0, the batch) along which one mask value is
            broadcast, e.g. ``(1,)`` for a (B, L, D) sequence gives one mask per (sample,
            feature) shared by every position.

    In eval mode, or with ``p == 0``, the module is the identity. The mask is drawn on the
    input's device in the input's dtype.

    >>> import deqkit as dk
    >>> drop = dk.VariationalDropout(0.5)
    >>> x = torch.ones(2, 6)
    >>> torch.equal(drop(x), drop(x))  # same mask until reset
    True
    >>> sorted(set(drop(x).flatten().tolist()) - {0.0})
    [2.0]
    """

    def __init__(self, p: float = 0.5, shared_dims: Iterable[int] = ()):
        super().__init__()
        self.p = check_float("p", p, minimum=0.0)
        if self.p >= 1.0:
            raise ValueError(f"p must be < 1, got {p!r}")
        if isinstance(shared_dims, int):
            shared_dims = (shared_dims,)
        dims = tuple(check_int("shared_dims entry", d) for d in shared_dims)
        if 0 in dims:
            raise ValueError(f"shared_dims must not contain the batch dimension 0, got {dims}")
        self.shared_dims = dims
        self._mask: torch.Tensor | None = None

    def reset(self) -> None:
        """Forget the mask; the next call draws a new one."""
        self._mask = None

    def mask_shape(self, shape: torch.Size) -> tuple[int, ...]:
        """Shape of the mask for an input of ``shape`` (size 1 along shared dimensions)."""
        ndim = len(shape)
        shared = set()
        for d in self.shared_dims:
            if not -ndim < d < ndim or d % ndim == 0:
                raise ValueError(
                    f"shared_dims {self.shared_dims} do not fit an input of shape {tuple(shape)}"
                )
            shared.add(d % ndim)
        return tuple(1 if i in shared else n for i, n in enumerate(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        shape = self.mask_shape(x.shape)
        mask = self._mask
        if mask is None or tuple(mask.shape) != shape or mask.device != x.device:
            # A new shape means a new batch without a reset: a stale mask cannot be reused.
            keep = 1.0 - self.p
            mask = torch.empty(shape, device=x.device, dtype=x.dtype).bernoulli_(keep) / keep
            self._mask = mask
        return x * mask.to(x.dtype)

    def extra_repr(self) -> str:
        text = f"p={self.p}"
        return text + (f", shared_dims={self.shared_dims}" if self.shared_dims else "")


class VariationalDropout2d(VariationalDropout):
    """One mask value per (sample, channel) of a channel-first (B, C, *spatial) map.

    >>> import deqkit as dk
    >>> out = dk.VariationalDropout2d(0.5)(torch.ones(2, 3, 4, 4))
    >>> bool((out.amax(dim=(2, 3)) == out.amin(dim=(2, 3))).all())  # constant per channel
    True
    """

    def __init__(self, p: float = 0.5):
        super().__init__(p)

    def mask_shape(self, shape: torch.Size) -> tuple[int, ...]:
        if len(shape) < 3:
            raise ValueError(f"VariationalDropout2d needs a (B, C, ...) map, got {tuple(shape)}")
        return (shape[0], shape[1]) + (1,) * (len(shape) - 2)


class VariationalDropoutToken(VariationalDropout):
    """Drops whole tokens: one mask value per (sample, token) of a (B, L, D) sequence.

    >>> import deqkit as dk
    >>> out = dk.VariationalDropoutToken(0.5)(torch.ones(2, 5, 3))
    >>> bool((out.amax(dim=2) == out.amin(dim=2)).all())  # a token is kept or dropped whole
    True
    """

    def __init__(self, p: float = 0.5):
        super().__init__(p)

    def mask_shape(self, shape: torch.Size) -> tuple[int, ...]:
        if len(shape) < 3:
            raise ValueError(f"VariationalDropoutToken needs a (B, L, D) input, got {tuple(shape)}")
        return tuple(shape[:-1]) + (1,)


def reset_dropout(module: nn.Module) -> None:
    """Reset every variational dropout module inside ``module`` (DEQ does this per call).

    >>> import deqkit as dk
    >>> net = torch.nn.Sequential(dk.VariationalDropout(0.5))
    >>> _ = net(torch.ones(1, 4)); dk.reset_dropout(net); net[0]._mask is None
    True
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    for sub in module.modules():
        if isinstance(sub, VariationalDropout):
            sub.reset()
