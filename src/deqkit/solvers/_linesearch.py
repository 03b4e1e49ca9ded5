"""Per-sample backtracking line search on ‖f(z) − z‖, shared by Broyden and Newton–Krylov."""

from __future__ import annotations

import torch

__all__ = ["bounded_step_search"]


def bounded_step_search(
    evaluate, z, fz, direction, active, max_halvings: int, armijo: float = 1e-4
):
    """Halve a sample's step while it fails to decrease ‖f(z) − z‖ (Armijo condition).

    Returns ``(z_new, fz_new)``. Each trial evaluates f on the whole batch (f may couple samples),
    so the number of trials, not the number of samples, sets the cost.

    >>> f = lambda z: 0.5 * z
    >>> z = torch.ones(1, 2)
    >>> z_new, fz_new = bounded_step_search(f, z, f(z), -z, torch.tensor([True]), 4)
    >>> z_new.tolist()
    [[0.0, 0.0]]
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
