"""Optical-flow pairs with exact ground truth, made from the photographs bundled with
scikit-image: a random view of a photograph is frame 1, the same view moved by a random affine
plus smooth non-rigid motion is frame 2 (FlyingChairs-style, but one layer); smooth camera
sequences for warm starts; and the Middlebury motorcycle stereo pair with dense ground truth.

Coordinates are pixel centres, x to the right, y down; flow (u, v) maps a frame-1 pixel x to
x + flow(x) in frame 2. Frame 2 is rendered through the inverse motion (found by fixed-point
iteration, the motion being a contraction away from the identity), so ``frame2(x + flow(x)) =
frame1(x)`` holds up to bilinear interpolation error.

>>> import torch
>>> pair = random_pair(train_photos(), (32, 48), torch.Generator().manual_seed(0))
>>> pair["image1"].shape, pair["flow"].shape, pair["valid"].dtype
(torch.Size([3, 32, 48]), torch.Size([2, 32, 48]), torch.bool)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "TEST_PHOTOS",
    "TRAIN_PHOTOS",
    "Motion",
    "motorcycle_pair",
    "photometric",
    "random_pair",
    "sample_bilinear",
    "smooth_sequence",
    "heldout_photos",
    "train_photos",
]

#: Photographs (``skimage.data`` names) used for training pairs, and the held-out ones.
TRAIN_PHOTOS = ("astronaut", "chelsea", "rocket", "immunohistochemistry", "brick", "grass",
                "gravel", "moon", "coins", "page", "text")  # fmt: skip
TEST_PHOTOS = ("coffee", "camera")
# Photographs are rescaled so that their shorter side has this many pixels.
_PHOTO_SIDE = 256


@functools.cache
def _photo(name: str) -> torch.Tensor:
    import skimage.data
    from skimage.transform import rescale

    image = np.asarray(getattr(skimage.data, name)(), np.float64) / 255.0
    image = image[..., None].repeat(3, axis=2) if image.ndim == 2 else image[..., :3]
    scale = _PHOTO_SIDE / min(image.shape[:2])
    image = rescale(image, scale, anti_aliasing=True, channel_axis=2)
    return torch.from_numpy(np.clip(image, 0, 1)).permute(2, 0, 1).float().contiguous()


def train_photos() -> tuple[torch.Tensor, ...]:
    """The training photographs as (3, H, W) float tensors in [0, 1] (cached)."""
    return tuple(_photo(n) for n in TRAIN_PHOTOS)


def heldout_photos() -> tuple[torch.Tensor, ...]:
    """The held-out photographs, never seen in training."""
    return tuple(_photo(n) for n in TEST_PHOTOS)


def sample_bilinear(image: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Sample (C, H, W) ``image`` at pixel positions ``points`` (..., 2) = (x, y), bilinear,
    border values outside.

    >>> img = torch.arange(6.0).reshape(1, 2, 3)
    >>> sample_bilinear(img, torch.tensor([[0.5, 0.5]])).tolist()
    [[2.0]]
    """
    c, h, w = image.shape
    grid = torch.stack([2 * points[..., 0] / (w - 1) - 1, 2 * points[..., 1] / (h - 1) - 1], -1)
    flat = grid.reshape(1, 1, -1, 2).to(image.dtype)
    out = F.grid_sample(image[None], flat, align_corners=True, padding_mode="border")
    return out.reshape(c, *points.shape[:-1])


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=g, dtype=torch.float64).item()


def _rotation(theta: float, scale: float) -> torch.Tensor:
    c, s = math.cos(theta) * scale, math.sin(theta) * scale
    return torch.tensor([[c, -s], [s, c]], dtype=torch.float64)


@dataclass(frozen=True)
class Motion:
    """Frame-1 displacement F(x) = t + (A − I)(x − centre) + Σ_k a_k exp(−|x − c_k|² / 2σ_k²).

    ``inverse(y)`` solves x + F(x) = y by the iteration x ← y − F(x) (F is a contraction for
    the small A − I and bump slopes drawn by :meth:`draw`).
    """

    shift: torch.Tensor  # (2,)
    linear: torch.Tensor  # (2, 2), A − I
    centre: torch.Tensor  # (2,)
    bump_centres: torch.Tensor  # (K, 2)
    bump_amplitudes: torch.Tensor  # (K, 2)
    bump_sigmas: torch.Tensor  # (K,)

    @classmethod
    def draw(cls, size: tuple[int, int], g: torch.Generator, max_shift: float,
             nonrigid: float, bumps: int = 3) -> Motion:  # fmt: skip
        """A random motion for (H, W) frames: shift within ``max_shift`` px, rotation ±3°,
        scale ±5%, and ``bumps`` Gaussian bumps of up to ``nonrigid`` px."""
        h, w = size
        radius = max_shift * math.sqrt(_uniform(g, 0, 1))
        angle = _uniform(g, -math.pi, math.pi)
        shift = torch.tensor(
            [radius * math.cos(angle), radius * math.sin(angle)], dtype=torch.float64
        )
        theta, scale = math.radians(_uniform(g, -3, 3)), _uniform(g, 0.95, 1.05)
        linear = _rotation(theta, scale) - torch.eye(2, dtype=torch.float64)
        lo = torch.tensor([0.0, 0.0], dtype=torch.float64)
        hi = torch.tensor([w - 1.0, h - 1.0], dtype=torch.float64)
        centres = lo + (hi - lo) * torch.rand(bumps, 2, generator=g, dtype=torch.float64)
        amps = nonrigid * (2 * torch.rand(bumps, 2, generator=g, dtype=torch.float64) - 1)
        sigmas = min(h, w) * (0.2 + 0.2 * torch.rand(bumps, generator=g, dtype=torch.float64))
        return cls(shift, linear, (hi - lo) / 2, centres, amps, sigmas)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """F at positions ``x`` (..., 2), float64."""
        out = self.shift + (x - self.centre) @ self.linear.T
        dx = x[..., :1] - self.bump_centres[:, 0]  # (..., K), without a (..., K, 2) tensor
        dy = x[..., 1:] - self.bump_centres[:, 1]
        weights = torch.exp((dx * dx + dy * dy) * (-0.5 / self.bump_sigmas.square()))
        return out + weights @ self.bump_amplitudes

    def inverse(self, y: torch.Tensor, tol: float = 1e-7, max_iter: int = 100) -> torch.Tensor:
        """Positions x with x + F(x) = y, to ``tol`` px."""
        x = y - self(y)
        for _ in range(max_iter):
            x, previous = y - self(x), x
            if float((x - previous).abs().max()) < tol:
                return x
        raise RuntimeError(f"inverting the motion did not converge: {self}")


def _pixel_grid(h: int, w: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64),
                            torch.arange(w, dtype=torch.float64), indexing="ij")  # fmt: skip
    return torch.stack([xs, ys], -1)  # (H, W, 2)


def _view(photo: torch.Tensor, size: tuple[int, int], g: torch.Generator, reach: float):
    """A random similarity S mapping frame pixels into ``photo`` with ``reach`` px of margin."""
    h, w = size
    _, ph, pw = photo.shape
    scale = _uniform(g, 0.8, 1.25)
    theta = math.radians(_uniform(g, -10, 10))
    radius = scale * (math.hypot(h, w) / 2 + reach) + 1
    scale_fit = min(1.0, (min(ph, pw) / 2 - 1) / radius)  # small photos: zoom in to stay inside
    scale, radius = scale * scale_fit, radius * scale_fit
    cx, cy = _uniform(g, radius, pw - 1 - radius), _uniform(g, radius, ph - 1 - radius)
    rot = _rotation(theta, scale)
    centre_out = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=torch.float64)
    centre_in = torch.tensor([cx, cy], dtype=torch.float64)
    return lambda x: centre_in + (x - centre_out) @ rot.T


def random_pair(photos, size: tuple[int, int], g: torch.Generator, max_shift: float = 6.0,
                nonrigid: float = 2.0) -> dict[str, torch.Tensor]:  # fmt: skip
    """One training pair: ``image1``, ``image2`` (3, H, W) in [0, 1], ``flow`` (2, H, W) and
    ``valid`` (H, W): the frame-1 pixel lands inside frame 2."""
    h, w = size
    photo = photos[int(torch.randint(len(photos), (), generator=g))]
    motion = Motion.draw(size, g, max_shift, nonrigid)
    view = _view(photo, size, g, reach=max_shift + 1.2 * nonrigid + 0.06 * max(h, w))
    grid = _pixel_grid(h, w)
    flow = motion(grid)
    image1 = sample_bilinear(photo, view(grid))
    image2 = sample_bilinear(photo, view(motion.inverse(grid)))
    target = grid + flow
    inside = (target[..., 0] >= 0) & (target[..., 0] <= w - 1)
    inside &= (target[..., 1] >= 0) & (target[..., 1] <= h - 1)
    return {"image1": image1, "image2": image2,
            "flow": flow.permute(2, 0, 1).float(), "valid": inside}  # fmt: skip


def photometric(image1: torch.Tensor, image2: torch.Tensor, g: torch.Generator,
                asymmetric: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Colour jitter (brightness, contrast, saturation, gamma) and sensor noise, the same for
    both frames except with probability ``asymmetric``; values stay in [0, 1]."""

    def draw():
        return [_uniform(g, 0.75, 1.25), _uniform(g, 0.75, 1.25), _uniform(g, 0.6, 1.4),
                math.exp(_uniform(g, -0.2, 0.2))]  # fmt: skip

    def jitter(image, params):
        bright, contrast, saturation, gamma = params
        image = image * bright
        image = (image - image.mean()) * contrast + image.mean()
        grey = image.mean(0, keepdim=True)
        image = (grey + (image - grey) * saturation).clamp(0, 1)
        return image.pow(gamma)

    first = draw()
    second = draw() if _uniform(g, 0, 1) < asymmetric else first
    sigma = _uniform(g, 0.0, 0.02)
    out = []
    for image, params in ((image1, first), (image2, second)):
        noise = sigma * torch.randn(image.shape, generator=g, dtype=image.dtype)
        out.append((jitter(image, params) + noise).clamp(0, 1))
    return out[0], out[1]


def smooth_sequence(photo: torch.Tensor, size: tuple[int, int], frames: int,
                    g: torch.Generator, speed: float = 3.0) -> dict[str, torch.Tensor]:  # fmt: skip
    """A camera gliding over ``photo``: ``images`` (T, 3, H, W) and, between frames t and
    t + 1, ``flows`` (T − 1, 2, H, W) and ``valid`` (T − 1, H, W). The velocity (``speed``
    px per frame) turns slowly, so consecutive flows are close: the setting of a warm start."""
    h, w = size
    _, ph, pw = photo.shape
    heading, turn = _uniform(g, -math.pi, math.pi), _uniform(g, -0.15, 0.15)
    zoom, theta0, spin = _uniform(g, 0.9, 1.1), _uniform(g, -0.1, 0.1), _uniform(g, -0.01, 0.01)
    path = [torch.zeros(2, dtype=torch.float64)]
    for t in range(frames - 1):
        a = heading + turn * t
        path.append(path[-1] + speed * zoom * torch.tensor([math.cos(a), math.sin(a)]))
    path = torch.stack(path)
    span = path.max(0).values - path.min(0).values
    radius = zoom * math.hypot(h, w) / 2 + 2
    room = torch.tensor([pw - 1.0, ph - 1.0], dtype=torch.float64) - span - 2 * radius
    if (room < 0).any():
        raise ValueError(f"photo {tuple(photo.shape)} too small for {frames} frames of {size}")
    start = torch.tensor([radius, radius], dtype=torch.float64) - path.min(0).values
    start = start + room * torch.rand(2, generator=g, dtype=torch.float64)
    centre_out = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=torch.float64)
    views = [(start + path[t], _rotation(theta0 + spin * t, zoom)) for t in range(frames)]
    grid = _pixel_grid(h, w)
    images, flows, valid = [], [], []
    for t, (centre, rot) in enumerate(views):
        images.append(sample_bilinear(photo, centre + (grid - centre_out) @ rot.T))
        if t + 1 < frames:
            nxt_centre, nxt_rot = views[t + 1]
            world = centre + (grid - centre_out) @ rot.T
            there = centre_out + (world - nxt_centre) @ torch.linalg.inv(nxt_rot).T
            flows.append((there - grid).permute(2, 0, 1).float())
            inside = (there[..., 0] >= 0) & (there[..., 0] <= w - 1)
            valid.append(inside & (there[..., 1] >= 0) & (there[..., 1] <= h - 1))
    return {"images": torch.stack(images), "flows": torch.stack(flows), "valid": torch.stack(valid)}


def motorcycle_pair(size: tuple[int, int] = (64, 96)) -> dict[str, torch.Tensor]:
    """The Middlebury 2014 motorcycle stereo pair (``skimage.data.stereo_motorcycle``) resized
    to ``size``: flow u = −disparity (left -> right view), v = 0, NaN where no ground truth.

    >>> pair = motorcycle_pair((32, 48))
    >>> pair["image1"].shape, bool(pair["valid"].float().mean() > 0.8)
    (torch.Size([3, 32, 48]), True)
    """
    import skimage.data
    from skimage.transform import resize

    left, right, disparity = skimage.data.stereo_motorcycle()
    known = np.isfinite(disparity)
    h, w = size

    def shrink(a):
        return resize(a, (h, w), order=1, anti_aliasing=True)

    images = [torch.from_numpy(shrink(im / 255.0)).permute(2, 0, 1).float() for im in (left, right)]
    share = shrink(known.astype(np.float64))
    mean_disp = shrink(np.where(known, disparity, 0.0)) / np.maximum(share, 1e-12)
    valid = share > 0.5  # most source pixels under the output pixel have ground truth
    u = -mean_disp * (w / disparity.shape[1])
    flow = np.stack([np.where(valid, u, np.nan), np.where(valid, 0.0, np.nan)])
    return {"image1": images[0], "image2": images[1],
            "flow": torch.from_numpy(flow).float(), "valid": torch.from_numpy(valid)}  # fmt: skip
