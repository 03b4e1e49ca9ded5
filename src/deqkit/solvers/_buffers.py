"""History writes that stay correct under autograd (an unrolled solve records every step)."""

from __future__ import annotations

import torch

from ._cpu import history_buffer, release

__all__ = ["history_buffer", "recording", "release", "write_slot"]


def recording(*tensors: torch.Tensor) -> bool:
    """Whether autograd records operations on any of ``tensors`` (an unrolled solve)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def write_slot(buf: torch.Tensor, slot: int, value: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Write ``value`` into ``buf`` at index ``slot`` along ``dim``.

    In place when nothing needs a gradient (the fast path of every forward solve); on a fresh copy
    when autograd is recording, so tensors saved by earlier iterations are never overwritten.

    >>> buf = torch.zeros(1, 2, 1)
    >>> write_slot(buf, 1, torch.ones(1, 1)).flatten().tolist()
    [0.0, 1.0]
    """
    if recording(buf, value):
        buf = buf.clone()
    buf.select(dim, slot).copy_(value)
    return buf
