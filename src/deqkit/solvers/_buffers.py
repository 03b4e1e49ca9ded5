"""History buffers: reused across solves on the CPU, written differentiably under autograd."""

from __future__ import annotations

import threading

import torch

#: Upper bound on the bytes of released history buffers kept for reuse, per thread.
POOL_BYTES = 256 * 2**20
_local = threading.local()


def _pool() -> dict:
    if not hasattr(_local, "pool"):
        _local.pool = {}
    return _local.pool


def history_buffer(like: torch.Tensor, slots: int) -> torch.Tensor:
    """An uninitialised (B, slots, D) buffer for the history of the (B, D) iterate ``like``.

    On the CPU the first write to freshly allocated memory costs a page fault per 4 KiB page, a
    sizeable share of a solve for the (B, m, D) histories of Anderson and Broyden; so buffers
    handed back by earlier solves (:func:`release`) are reused. Elsewhere (CUDA's caching
    allocator already reuses memory) and while autograd records, this is ``new_empty``.

    >>> with torch.no_grad():
    ...     a = history_buffer(torch.zeros(2, 3), 4)
    ...     release(a)
    ...     history_buffer(torch.zeros(2, 3), 4) is a
    True
    """
    shape = (like.shape[0], slots, like.shape[1])
    if like.device.type == "cpu" and not torch.is_grad_enabled():
        buffers = _pool().get((shape, like.dtype, torch.is_inference_mode_enabled()))
        if buffers:
            return buffers.pop()
    return like.new_empty(shape)


def release(*buffers: torch.Tensor) -> None:
    """Hand history buffers back for reuse by later solves (CPU, no autograd history only).

    The caller promises that nothing else refers to them any more. Nothing is kept while autograd
    records (saved tensors may still view the buffers).
    """
    if torch.is_grad_enabled():
        return
    pool = _pool()
    for buf in buffers:
        if buf.device.type != "cpu" or buf.requires_grad or buf._base is not None:
            continue
        if buf.nbytes > POOL_BYTES:
            continue
        held = sum(b.nbytes for kept in pool.values() for b in kept)
        if held + buf.nbytes > POOL_BYTES:  # make room the simple way: forget the rest
            pool.clear()
        key = (tuple(buf.shape), buf.dtype, buf.is_inference())
        pool.setdefault(key, []).append(buf)


def clear_pool() -> None:
    """Drop every buffer kept for reuse by this thread."""
    _pool().clear()


def recording(*tensors: torch.Tensor) -> bool:
    """Whether autograd records operations on any of ``tensors`` (an unrolled solve)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def write_slot(buf: torch.Tensor, slot: int, value: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Write ``value`` into ``buf`` at index ``slot`` along ``dim``.

    In place when nothing needs a gradient (the fast path of every forward solve); on a fresh copy
    when autograd is recording, so tensors saved by earlier iterations are never overwritten.
    """
    if recording(buf, value):
        buf = buf.clone()
    buf.select(dim, slot).copy_(value)
    return buf


def bounded_step_search(
    evaluate, z, fz, direction, active, max_halvings: int, armijo: float = 1e-4
):
    """Per-sample backtracking on ‖f(z) − z‖: halve a sample's step while it fails to decrease.

    Returns ``(z_new, fz_new)``. Each trial evaluates f on the whole batch (f may couple samples),
    so the number of trials, not the number of samples, sets the cost.
    """
    g_norm = torch.linalg.vector_norm(fz - z, dim=1)
    scale = torch.ones_like(g_norm)
    z_new = z + direction
    fz_new = evaluate(z_new)
    for _ in range(max_halvings):
        new_norm = torch.linalg.vector_norm(fz_new - z_new, dim=1)
        bad = active & ~(new_norm <= (1.0 - armijo * scale) * g_norm)
        if not bool(bad.any()):
            break
        scale = torch.where(bad, scale * 0.5, scale)
        z_try = z + scale[:, None] * direction
        f_try = evaluate(z_try)
        z_new = torch.where(bad[:, None], z_try, z_new)
        fz_new = torch.where(bad[:, None], f_try, fz_new)
    return z_new, fz_new
