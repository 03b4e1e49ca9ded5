"""A small UNet noise predictor ε_θ(x, t): residual blocks with group norm and a sinusoidal time
embedding, optional self-attention at the lowest resolution (the DDPM architecture of Ho, Jain,
Abbeel, NeurIPS 2020, scaled down for CPU)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["UNet", "UNetConfig", "timestep_embedding"]


@dataclass(frozen=True)
class UNetConfig:
    """``channels`` at the first level, multiplied by ``mults`` per level (one 2x downsampling
    between levels), ``blocks`` residual blocks per level, ``attention`` at the lowest level."""

    channels: int = 32
    mults: tuple[int, ...] = (1, 2)
    blocks: int = 1
    attention: bool = False
    dropout: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "mults", tuple(self.mults))
        if not isinstance(self.channels, int) or self.channels < 1:
            raise ValueError(f"UNet channels must be a positive int, got {self.channels!r}")
        if not self.mults or any(not isinstance(m, int) or m < 1 for m in self.mults):
            raise ValueError(f"UNet mults must be positive ints, got {self.mults!r}")
        if not isinstance(self.blocks, int) or self.blocks < 1:
            raise ValueError(f"UNet blocks must be a positive int, got {self.blocks!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"UNet dropout must be in [0, 1), got {self.dropout!r}")

    @classmethod
    def from_dict(cls, options: dict) -> UNetConfig:
        """Build from a recipe dict, rejecting unknown keys.

        >>> UNetConfig.from_dict({"channels": 8}).channels
        8
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown UNet options {unknown}; known: {sorted(known)}")
        return cls(**options)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of integer timesteps t (B,).

    >>> timestep_embedding(torch.tensor([0, 999]), 8).shape
    torch.Size([2, 8])
    """
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    args = t.to(freqs.dtype)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.time = nn.Linear(temb, cout)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class _Attention(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        att = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )
        return x + self.out(att.transpose(1, 2).reshape(b, c, h, w))


class UNet(nn.Module):
    """ε_θ(x, t) for images x (B, C, H, W) of any size (odd sizes included) and timesteps t (B,).

    >>> net = UNet(1, UNetConfig(channels=8, attention=True))
    >>> net(torch.zeros(2, 1, 7, 9), torch.tensor([0, 5])).shape
    torch.Size([2, 1, 7, 9])
    """

    def __init__(self, in_channels: int, config: UNetConfig = UNetConfig()):
        super().__init__()
        c, temb = config.channels, 4 * config.channels
        self.config = config
        self.embed = nn.Sequential(nn.Linear(c, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.stem = nn.Conv2d(in_channels, c, 3, padding=1)
        widths = [c * m for m in config.mults]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips, cin = [c], c
        for level, w in enumerate(widths):
            for _ in range(config.blocks):
                self.down.append(_ResBlock(cin, w, temb, config.dropout))
                cin = w
                skips.append(w)
            if level < len(widths) - 1:
                self.downsample.append(nn.Conv2d(w, w, 3, stride=2, padding=1))
                skips.append(w)
        self.mid1 = _ResBlock(cin, cin, temb, config.dropout)
        self.attn = _Attention(cin) if config.attention else nn.Identity()
        self.mid2 = _ResBlock(cin, cin, temb, config.dropout)
        self.up = nn.ModuleList()
        for level, w in reversed(list(enumerate(widths))):
            for _ in range(config.blocks + (1 if level < len(widths) - 1 else 0)):
                self.up.append(_ResBlock(cin + skips.pop(), w, temb, config.dropout))
                cin = w
        # The first level's extra skip (the stem output) is taken by the last block.
        self.up.append(_ResBlock(cin + skips.pop(), c, temb, config.dropout))
        self.head = nn.Sequential(_norm(c), nn.SiLU(), nn.Conv2d(c, in_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The predicted noise, shaped like ``x``."""
        cfg = self.config
        emb = self.embed(timestep_embedding(t, cfg.channels).to(x.dtype))
        h = self.stem(x)
        hs = [h]
        blocks, down = iter(self.down), iter(self.downsample)
        for level in range(len(cfg.mults)):
            for _ in range(cfg.blocks):
                h = next(blocks)(h, emb)
                hs.append(h)
            if level < len(cfg.mults) - 1:
                h = next(down)(h)
                hs.append(h)
        h = self.mid2(self.attn(self.mid1(h, emb)), emb)
        ups = iter(self.up)
        for level in reversed(range(len(cfg.mults))):
            n = cfg.blocks + (1 if level < len(cfg.mults) - 1 else 0)
            for _ in range(n):
                skip = hs.pop()
                if h.shape[-2:] != skip.shape[-2:]:
                    h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
                h = next(ups)(torch.cat([h, skip], 1), emb)
        h = next(ups)(torch.cat([h, hs.pop()], 1), emb)
        return self.head(h)
