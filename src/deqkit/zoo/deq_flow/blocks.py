"""RAFT's networks at any width: residual encoders (feature: instance norm, context: batch
norm), the motion encoder, the separable ConvGRU, the flow head, the convex-upsampling mask head
and convex upsampling itself.

>>> import torch
>>> enc = Encoder(out_dim=16, widths=(8, 8, 16), norm="instance", downsample=4)
>>> tuple(enc(torch.randn(2, 3, 32, 48)).shape)
(2, 16, 8, 12)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NORMS", "ConvexUpsampler", "Encoder", "FlowHead", "MotionEncoder", "SepConvGRU",
           "convex_upsample"]  # fmt: skip

NORMS = ("instance", "batch", "group", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(max(1, channels // 8), channels)
    return nn.Identity()


class _Residual(nn.Module):
    def __init__(self, c_in: int, c_out: int, norm: str, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.norm1, self.norm2 = _norm(norm, c_out), _norm(norm, c_out)
        self.skip = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride), _norm(norm, c_out))
        )

    def forward(self, x):
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        return F.relu(self.skip(x) + y)


class Encoder(nn.Module):
    """7×7 stride-2 stem, residual stages (the last one or two with stride 2), 1×1 output:
    features at 1/``downsample`` (4 or 8) of the input resolution."""

    def __init__(self, out_dim: int, widths: tuple[int, int, int], norm: str, downsample: int):
        super().__init__()
        if downsample not in (4, 8):
            raise ValueError(f"downsample must be 4 or 8, got {downsample}")
        w0, w1, w2 = widths
        strides = (1, 2, 2) if downsample == 8 else (1, 2, 1)
        self.stem = nn.Sequential(nn.Conv2d(3, w0, 7, stride=2, padding=3), _norm(norm, w0),
                                  nn.ReLU())  # fmt: skip
        stages, c = [], w0
        for width, stride in zip((w0, w1, w2), strides, strict=True):
            stages += [_Residual(c, width, norm, stride), _Residual(width, width, norm, 1)]
            c = width
        self.stages = nn.Sequential(*stages)
        self.out = nn.Conv2d(c, out_dim, 1)

    def forward(self, x):
        return self.out(self.stages(self.stem(x)))


class MotionEncoder(nn.Module):
    """Correlation features and the current flow -> motion features (the flow appended)."""

    def __init__(self, corr_channels: int, corr_dim: int, flow_dim: int, out_dim: int):
        super().__init__()
        self.corr1 = nn.Conv2d(corr_channels, corr_dim, 1)
        self.corr2 = nn.Conv2d(corr_dim, corr_dim, 3, padding=1)
        self.flow1 = nn.Conv2d(2, flow_dim, 7, padding=3)
        self.flow2 = nn.Conv2d(flow_dim, flow_dim, 3, padding=1)
        self.mix = nn.Conv2d(corr_dim + flow_dim, out_dim - 2, 3, padding=1)

    def forward(self, flow, corr):
        c = F.relu(self.corr2(F.relu(self.corr1(corr))))
        f = F.relu(self.flow2(F.relu(self.flow1(flow))))
        return torch.cat([F.relu(self.mix(torch.cat([c, f], 1))), flow], 1)


class SepConvGRU(nn.Module):
    """A ConvGRU applied twice: 1×5 (horizontal) then 5×1 (vertical) kernels."""

    def __init__(self, hidden: int, input_dim: int):
        super().__init__()
        c = hidden + input_dim
        self.horizontal = nn.ModuleList(nn.Conv2d(c, hidden, (1, 5), padding=(0, 2)) for _ in "zrq")
        self.vertical = nn.ModuleList(nn.Conv2d(c, hidden, (5, 1), padding=(2, 0)) for _ in "zrq")

    @staticmethod
    def _step(convs, h, x):
        hx = torch.cat([h, x], 1)
        z, r = torch.sigmoid(convs[0](hx)), torch.sigmoid(convs[1](hx))
        q = torch.tanh(convs[2](torch.cat([r * h, x], 1)))
        return (1 - z) * h + z * q

    def forward(self, h, x):
        return self._step(self.vertical, self._step(self.horizontal, h, x), x)


class FlowHead(nn.Module):
    """Hidden state -> flow update Δ (2 channels)."""

    def __init__(self, hidden: int, mid: int):
        super().__init__()
        self.conv1 = nn.Conv2d(hidden, mid, 3, padding=1)
        self.conv2 = nn.Conv2d(mid, 2, 3, padding=1)

    def forward(self, h):
        return self.conv2(F.relu(self.conv1(h)))


def convex_upsample(flow: torch.Tensor, mask: torch.Tensor, factor: int) -> torch.Tensor:
    """Each full-resolution flow vector is a convex combination (softmax weights from ``mask``,
    (B, 9·factor², H, W)) of the 3×3 coarse neighbours, times ``factor``. The border is padded by
    replication, so a constant flow c upsamples to exactly factor·c everywhere.

    >>> flow = torch.full((1, 2, 3, 4), 1.5)
    >>> up = convex_upsample(flow, torch.randn(1, 9 * 16, 3, 4), 4)
    >>> tuple(up.shape), bool(torch.allclose(up, torch.full_like(up, 6.0)))
    ((1, 2, 12, 16), True)
    """
    b, _, h, w = flow.shape
    weights = torch.softmax(mask.reshape(b, 1, 9, factor, factor, h, w), dim=2)
    padded = F.pad(factor * flow, (1, 1, 1, 1), mode="replicate")
    patches = F.unfold(padded, 3).reshape(b, 2, 9, 1, 1, h, w)
    up = (weights * patches).sum(2)  # (B, 2, factor, factor, H, W)
    return up.permute(0, 1, 4, 2, 5, 3).reshape(b, 2, h * factor, w * factor)


class ConvexUpsampler(nn.Module):
    """The learned mask head (scaled by 0.25 as in RAFT) and convex upsampling, outside f."""

    def __init__(self, hidden: int, mid: int, factor: int):
        super().__init__()
        self.factor = factor
        self.mask = nn.Sequential(nn.Conv2d(hidden, mid, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(mid, 9 * factor * factor, 1))  # fmt: skip

    def forward(self, h, flow):
        return convex_upsample(flow, 0.25 * self.mask(h), self.factor)
