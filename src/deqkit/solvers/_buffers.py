"""Ring-buffer writes that stay differentiable when a solve is unrolled under autograd."""

from __future__ import annotations

import torch


def write_slot(buf: torch.Tensor, slot: int, value: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Write ``value`` into ``buf`` at index ``slot`` along ``dim``.

    In place when nothing needs a gradient (the fast path of every forward solve); on a fresh copy
    when autograd is recording, so tensors saved by earlier iterations are never overwritten.
    """
    if torch.is_grad_enabled() and (buf.requires_grad or value.requires_grad):
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
