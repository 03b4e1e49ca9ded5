"""The standard colour-wheel coding of optical flow (Baker et al., "A Database and Evaluation
Methodology for Optical Flow", IJCV 2011): hue = direction, saturation = magnitude relative to
a maximum; and the picture of a prediction next to the ground truth and its error.

>>> import torch
>>> rgb = flow_to_colour(torch.tensor([[[1.0, 0.0]], [[0.0, 0.0]]]), max_radius=1.0)
>>> rgb.shape, rgb[0, 1].tolist()  # zero flow is white
((1, 2, 3), [1.0, 1.0, 1.0])
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["colour_wheel", "flow_picture", "flow_to_colour"]

# Hue segments of the wheel: (number of steps, start colour, end colour), red -> yellow ->
# green -> cyan -> blue -> magenta -> red, with the step counts of the Middlebury coding.
_SEGMENTS = (
    (15, (1, 0, 0), (1, 1, 0)),
    (6, (1, 1, 0), (0, 1, 0)),
    (4, (0, 1, 0), (0, 1, 1)),
    (11, (0, 1, 1), (0, 0, 1)),
    (13, (0, 0, 1), (1, 0, 1)),
    (6, (1, 0, 1), (1, 0, 0)),
)


def colour_wheel() -> np.ndarray:
    """The 55 wheel colours (55, 3) in [0, 1], starting at red."""
    rows = []
    for steps, start, end in _SEGMENTS:
        t = np.arange(steps)[:, None] / steps
        rows.append((1 - t) * np.array(start) + t * np.array(end))
    return np.concatenate(rows)


def flow_to_colour(flow, max_radius: float | None = None) -> np.ndarray:
    """Flow (2, H, W) -> RGB (H, W, 3) in [0, 1]; magnitudes above ``max_radius`` (default the
    largest finite magnitude) are darkened, NaN pixels are black."""
    flow = np.asarray(flow.detach().cpu() if isinstance(flow, torch.Tensor) else flow, np.float64)
    u, v = flow[0], flow[1]
    known = np.isfinite(u) & np.isfinite(v)
    u, v = np.where(known, u, 0.0), np.where(known, v, 0.0)
    radius = np.hypot(u, v)
    if max_radius is None:
        max_radius = float(radius.max()) if radius.size else 1.0
    radius = radius / max(max_radius, 1e-12)
    wheel = colour_wheel()
    n = len(wheel)
    position = (np.arctan2(-v, -u) / np.pi + 1) / 2 * (n - 1)
    k0 = np.floor(position).astype(int)
    k1 = (k0 + 1) % n
    frac = (position - k0)[..., None]
    colour = (1 - frac) * wheel[k0] + frac * wheel[k1]
    inside = (radius <= 1)[..., None]
    colour = np.where(inside, 1 - radius[..., None] * (1 - colour), 0.75 * colour)
    return np.where(known[..., None], colour, 0.0)


def flow_picture(image1, pred, flow, valid) -> np.ndarray:
    """Frame 1 | predicted flow | ground truth (both on the ground truth's colour scale) | EPE
    map (white = 0, black >= 3 px; red where there is no ground truth), one RGB array.

    >>> import torch
    >>> flow_picture(torch.rand(3, 4, 5), torch.zeros(2, 4, 5), torch.ones(2, 4, 5),
    ...              torch.ones(4, 5, dtype=torch.bool)).shape
    (4, 26, 3)
    """
    from deqkit.plot import side_by_side

    valid = np.asarray(valid.cpu(), bool)
    gt = np.asarray(flow.detach().cpu(), np.float64)
    gt = np.where(valid[None], gt, np.nan)
    scale = float(np.nanmax(np.hypot(gt[0], gt[1]))) if valid.any() else 1.0
    err = np.asarray((pred.detach().cpu() - flow.detach().cpu()).square().sum(0).sqrt(), float)
    grey = 1 - np.clip(err / 3.0, 0, 1)
    error_map = np.where(valid[..., None], grey[..., None].repeat(3, 2), [1.0, 0.0, 0.0])
    frame = np.asarray(image1.detach().cpu().permute(1, 2, 0), float)
    return side_by_side(frame, flow_to_colour(pred, scale), flow_to_colour(gt, scale), error_map)
