"""The MDEQ fixed-point map f_θ: a residual block per resolution, then multiscale fusion.

The state is a tuple with one (B, c_i, H / 2^i, W / 2^i) tensor per resolution i; the
injection has the same structure and is zero everywhere but resolution 0 (Bai et al., 2020).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["MDEQCell"]


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class _Block(nn.Module):
    """u = ReLU(GN(conv(z))); v = GN(drop(conv(u)) + x); out = GN(ReLU(v + z))."""

    def __init__(self, channels: int, expansion: int, groups: int, dropout: nn.Module):
        super().__init__()
        wide = expansion * channels
        self.conv1 = _conv3x3(channels, wide)
        self.gn1 = nn.GroupNorm(groups, wide)
        self.conv2 = _conv3x3(wide, channels)
        self.drop = dropout
        self.gn2 = nn.GroupNorm(groups, channels)
        self.gn3 = nn.GroupNorm(groups, channels)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        u = F.relu(self.gn1(self.conv1(z)))
        v = self.gn2(self.drop(self.conv2(u)) + x)
        return self.gn3(F.relu(v + z))


def _upsample_path(c_in: int, c_out: int, groups: int) -> nn.Module:
    # The ×2^k nearest upsampling itself happens in _Fusion, which knows the target size.
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.GroupNorm(groups, c_out))


def _downsample_path(c_in: int, c_out: int, hops: int, groups: int) -> nn.Module:
    layers: list[nn.Module] = []
    for k in range(hops):
        last = k == hops - 1
        layers += [_conv3x3(c_in, c_out if last else c_in, stride=2)]
        layers += [nn.GroupNorm(groups, c_out if last else c_in)]
        if not last:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class _Fusion(nn.Module):
    """y_i = b_i + Σ_{j≠i} F_ij(b_j), then z_i⁺ = GN(conv1x1(ReLU(y_i))) without affine terms."""

    def __init__(self, channels: tuple[int, ...], groups: int):
        super().__init__()
        n = len(channels)
        self.paths = nn.ModuleDict()
        for i in range(n):
            for j in range(n):
                if j > i:
                    self.paths[f"{j}to{i}"] = _upsample_path(channels[j], channels[i], groups)
                elif j < i:
                    path = _downsample_path(channels[j], channels[i], i - j, groups)
                    self.paths[f"{j}to{i}"] = path
        post_groups = max(groups // 2, 1)
        self.post = nn.ModuleList(
            nn.Sequential(
                nn.ReLU(),
                nn.Conv2d(c, c, 1, bias=False),
                nn.GroupNorm(post_groups, c, affine=False),
            )
            for c in channels
        )

    def forward(self, b: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        out = []
        for i, b_i in enumerate(b):
            y = b_i
            for j, b_j in enumerate(b):
                if j == i:
                    continue
                moved = self.paths[f"{j}to{i}"](b_j)
                if j > i:
                    moved = F.interpolate(moved, size=b_i.shape[-2:], mode="nearest")
                y = y + moved
            out.append(self.post[i](y))
        return tuple(out)


class MDEQCell(nn.Module):
    """f_θ(z, x) for a tuple state z and a same-shaped tuple injection x.

    Args:
        channels: channels per resolution, highest resolution first.
        expansion: width factor of each residual block's hidden layer.
        groups: GroupNorm groups (the post-fusion norm uses half as many).
        make_dropout: a no-argument factory for the module applied inside every block after
            its second convolution (variational 2-D dropout in the paper; ``nn.Identity`` for
            none); each block gets its own instance.

    >>> cell = MDEQCell((4, 8), expansion=2, groups=2)
    >>> z = (torch.zeros(3, 4, 8, 8), torch.zeros(3, 8, 4, 4))
    >>> [t.shape[1:] for t in cell(z, z)]
    [torch.Size([4, 8, 8]), torch.Size([8, 4, 4])]
    """

    def __init__(
        self,
        channels: tuple[int, ...],
        expansion: int = 2,
        groups: int = 4,
        make_dropout=nn.Identity,
    ):
        super().__init__()
        self.channels = tuple(channels)
        self.blocks = nn.ModuleList(
            _Block(c, expansion, groups, make_dropout()) for c in self.channels
        )
        self.fusion = _Fusion(self.channels, groups)

    def forward(
        self, z: tuple[torch.Tensor, ...], x: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, ...]:
        b = tuple(block(z_i, x_i) for block, z_i, x_i in zip(self.blocks, z, x, strict=True))
        return self.fusion(b)
