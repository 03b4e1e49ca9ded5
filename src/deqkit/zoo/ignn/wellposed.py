"""Well-posedness of IGNN: the Perron–Frobenius root of a sparse |A| and the ℓ1-ball projection.

Gu et al. (NeurIPS 2020, Theorem 4.1/4.2): X = φ(W X A + B) has a unique solution, reached by
Picard iteration, when λ_pf(|W|) λ_pf(|A|) < 1; since λ_pf(|W|) ≤ ‖W‖_∞ (the largest row ℓ1
norm), projecting each row of W onto the ℓ1 ball of radius κ / λ_pf(|A|), κ < 1, keeps it so.
"""

from __future__ import annotations

import torch

from deqkit.data.graphs import perron_root

__all__ = ["perron_root", "project_rows_l1"]


def project_rows_l1(weight: torch.Tensor, radius: float) -> torch.Tensor:
    """Euclidean projection of every row of ``weight`` onto the ℓ1 ball of ``radius``.

    Rows inside the ball are returned unchanged; the others become sign(w)·max(|w| − θ, 0) with
    the θ of Duchi et al. (ICML 2008) that puts them on the sphere.

    >>> w = torch.tensor([[3.0, -1.0], [0.2, 0.1]])
    >>> project_rows_l1(w, 1.0).tolist()
    [[1.0, -0.0], [0.20000000298023224, 0.10000000149011612]]
    """
    if not radius > 0:
        raise ValueError(f"radius must be positive, got {radius!r}")
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D, got shape {tuple(weight.shape)}")
    a = weight.abs()
    outside = a.sum(1) > radius
    if not bool(outside.any()):
        return weight.clone()
    # float64: |w| - θ cancels when the entries are much larger than the radius.
    rows = a[outside].double()
    u = rows.sort(dim=1, descending=True).values
    css = u.cumsum(1) - radius
    j = torch.arange(1, u.shape[1] + 1, dtype=u.dtype, device=u.device)
    # rho = the last j with u_j > css_j / j; it exists for every row outside the ball.
    rho = (u * j > css).to(u.dtype).mul(j).argmax(1, keepdim=True)
    theta = css.gather(1, rho) / (rho + 1).to(u.dtype)
    inside = (rows - theta).clamp_min(0).to(weight.dtype)
    # Rounding to weight.dtype can leave a row a few ulps outside; shrink those onto the ball.
    norm = inside.sum(1, keepdim=True)
    inside = torch.where(norm > radius, inside * (radius / norm), inside)
    out = weight.clone()
    out[outside] = weight[outside].sign() * inside
    return out
