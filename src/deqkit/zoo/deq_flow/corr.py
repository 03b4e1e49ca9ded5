"""The all-pairs correlation pyramid of RAFT, built once per image pair, and its bilinear
lookup around the current correspondence (called inside f at every solver iteration).

Level 0 holds <f1(x), f2(y)> / sqrt(D) for every pixel pair of the 1/4 or 1/8 feature maps;
level l average-pools the frame-2 axes by 2^l. Every level is stored as (B, H·W, h_l, w_l), so
the batch stays in dim 0 (the DEQ's inputs are per-sample).

>>> import torch
>>> f1, f2 = torch.randn(2, 8, 4, 6), torch.randn(2, 8, 4, 6)
>>> pyramid = corr_pyramid(f1, f2, levels=2)
>>> [tuple(p.shape) for p in pyramid]
[(2, 24, 4, 6), (2, 24, 2, 3)]
>>> coords = pixel_grid(2, 4, 6)
>>> tuple(corr_lookup(pyramid, coords, radius=1).shape)
(2, 18, 4, 6)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["corr_lookup", "corr_pyramid", "pixel_grid"]


def pixel_grid(batch: int, height: int, width: int, like: torch.Tensor | None = None):
    """Pixel coordinates (B, 2, H, W), channel 0 = x (column), channel 1 = y (row).

    >>> pixel_grid(1, 2, 3)[0, :, 1, 2].tolist()
    [2.0, 1.0]
    """
    dtype = like.dtype if like is not None else torch.float32
    device = like.device if like is not None else None
    rows = torch.arange(height, dtype=dtype, device=device)
    ys, xs = torch.meshgrid(rows, torch.arange(width, dtype=dtype, device=device), indexing="ij")
    return torch.stack([xs, ys]).unsqueeze(0).expand(batch, 2, height, width)


def corr_pyramid(fmap1: torch.Tensor, fmap2: torch.Tensor, levels: int) -> tuple[torch.Tensor, ...]:
    """All-pairs correlation of two (B, D, H, W) feature maps, then ``levels`` − 1 poolings."""
    if fmap1.shape != fmap2.shape or fmap1.dim() != 4:
        raise ValueError(
            f"feature maps must match as (B, D, H, W), got {fmap1.shape}, {fmap2.shape}"
        )
    b, d, h, w = fmap1.shape
    if min(h, w) < 2 ** (levels - 1):
        raise ValueError(f"{levels} correlation levels need feature maps of at least "
                         f"{2 ** (levels - 1)} px, got {h}x{w}")  # fmt: skip
    corr = torch.einsum("bdn,bdm->bnm", fmap1.flatten(2), fmap2.flatten(2)) / math.sqrt(d)
    level = corr.reshape(b * h * w, 1, h, w)
    pyramid = [level.reshape(b, h * w, h, w)]
    for _ in range(levels - 1):
        level = F.avg_pool2d(level, 2, stride=2)
        pyramid.append(level.reshape(b, h * w, *level.shape[-2:]))
    return tuple(pyramid)


def corr_lookup(pyramid, coords: torch.Tensor, radius: int) -> torch.Tensor:
    """Bilinear correlation values in a (2r + 1)² window around ``coords`` (B, 2, H, W), the
    frame-2 positions in level-0 pixels, at every level: (B, L·(2r + 1)², H, W). Outside
    frame 2 the correlation is 0. Window order: dy outer, dx inner."""
    b, _, h, w = coords.shape
    steps = torch.arange(-radius, radius + 1, dtype=coords.dtype, device=coords.device)
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    window = torch.stack([dx, dy], -1).reshape(1, 2 * radius + 1, 2 * radius + 1, 2)
    centres = coords.permute(0, 2, 3, 1).reshape(b * h * w, 1, 1, 2)
    out = []
    for level, corr in enumerate(pyramid):
        lh, lw = corr.shape[-2:]
        points = centres / 2**level + window  # (BHW, 2r+1, 2r+1, 2) in level pixels
        # align_corners=False maps pixel centre i to (2i + 1) / n − 1, also for n = 1.
        size = torch.tensor([lw, lh], dtype=coords.dtype, device=coords.device)
        grid = (2 * points + 1) / size - 1
        sampled = F.grid_sample(corr.reshape(b * h * w, 1, lh, lw), grid, align_corners=False)
        out.append(sampled.reshape(b, h, w, -1))
    return torch.cat(out, -1).permute(0, 3, 1, 2).contiguous()
