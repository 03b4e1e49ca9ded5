"""The four benchmark problems: a map f and a starting state, identical for both libraries.

Each problem is built from a seed, so every process (the memory runner's subprocesses included)
sees the same weights. ``f`` maps a tensor to a tensor of the same shape; the MDEQ-like cell keeps
its two branches packed in one flat (B, D) tensor because TorchDEQ's solver functions take a
single tensor, and the same f object must serve both libraries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class Problem:
    """A benchmark problem: ``f`` (a module, so gradients reach its weights), ``z0``, ``x``."""

    key: str
    title: str
    cell: nn.Module
    x: torch.Tensor
    z0: torch.Tensor
    max_iter: int

    def f(self, z: torch.Tensor) -> torch.Tensor:
        return self.cell(z, self.x)


def _matrix(width: int, radius: float, symmetric: bool, gen: torch.Generator) -> torch.Tensor:
    """A symmetric matrix with eigenvalues evenly spread over [−radius, radius] (so its spectral
    norm is ``radius``), or a Gaussian matrix rescaled to spectral radius ``radius``: a
    non-normal map whose eigenvalues fill a disc, much harder for every solver."""
    if symmetric:
        q, _ = torch.linalg.qr(torch.randn(width, width, generator=gen))
        return (q * torch.linspace(-radius, radius, width)) @ q.T
    w = torch.randn(width, width, generator=gen)
    return w * (radius / torch.linalg.eigvals(w.double()).abs().max().item())


class TanhCell(nn.Module):
    """f(z) = tanh(W z + U x), W from :func:`_matrix`."""

    def __init__(self, width: int, radius: float, symmetric: bool, gen: torch.Generator):
        super().__init__()
        self.weight = nn.Parameter(_matrix(width, radius, symmetric, gen))
        self.inject = nn.Parameter(torch.randn(width, width, generator=gen) / width**0.5)

    def forward(self, z, x):
        return torch.tanh(F.linear(z, self.weight) + F.linear(x, self.inject))


class TransformerCell(nn.Module):
    """A post-LN transformer block (attention + FFN), the input injected into its residual."""

    def __init__(self, d: int, heads: int, gen: torch.Generator, scale: float = 0.8):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Parameter(torch.randn(3 * d, d, generator=gen) * scale / d**0.5)
        self.out = nn.Parameter(torch.randn(d, d, generator=gen) * scale / d**0.5)
        self.ff1 = nn.Parameter(torch.randn(4 * d, d, generator=gen) * scale / d**0.5)
        self.ff2 = nn.Parameter(torch.randn(d, 4 * d, generator=gen) * scale / (4 * d) ** 0.5)
        self.ln1 = nn.LayerNorm(d)
        self.ln2 = nn.LayerNorm(d)

    def forward(self, z, x):
        b, t, d = z.shape
        q, k, v = F.linear(z, self.qkv).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        att = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )
        att = F.linear(att.transpose(1, 2).reshape(b, t, d), self.out)
        h = self.ln1(z + att + x)
        return self.ln2(h + F.linear(F.relu(F.linear(h, self.ff1)), self.ff2))


class MDEQCell(nn.Module):
    """Two resolutions (c₁×s×s and c₂×s/2×s/2) with residual blocks and cross-resolution fusion.

    The state is the two branches flattened and concatenated into one (B, D) tensor.
    """

    def __init__(self, c1: int, c2: int, size: int, gen: torch.Generator, scale: float = 0.3):
        super().__init__()
        self.shapes = ((c1, size, size), (c2, size // 2, size // 2))
        self.split = [c * h * w for c, h, w in self.shapes]

        def conv(cin, cout, k):
            return nn.Parameter(
                torch.randn(cout, cin, k, k, generator=gen) * scale / (cin * k * k) ** 0.5
            )

        self.b1a, self.b1b = conv(c1, c1, 3), conv(c1, c1, 3)
        self.b2a, self.b2b = conv(c2, c2, 3), conv(c2, c2, 3)
        self.down = conv(c1, c2, 3)
        self.up = conv(c2, c1, 1)
        self.norms = nn.ModuleList(nn.GroupNorm(4, c) for c in (c1, c1, c2, c2, c1, c2))

    def _block(self, z, x, wa, wb, na, nb):
        h = F.relu(na(F.conv2d(z, wa, padding=1)))
        return nb(F.conv2d(h, wb, padding=1) + x)

    def forward(self, z, x):
        batch = z.shape[0]
        (z1, z2), (x1, x2) = (
            [
                t.view(batch, *s)
                for t, s in zip(v.split(self.split, dim=1), self.shapes, strict=True)
            ]
            for v in (z, x)
        )
        n = self.norms
        y1 = F.relu(self._block(z1, x1, self.b1a, self.b1b, n[0], n[1]) + z1)
        y2 = F.relu(self._block(z2, x2, self.b2a, self.b2b, n[2], n[3]) + z2)
        up = F.interpolate(F.conv2d(y2, self.up), scale_factor=2, mode="nearest")
        down = F.conv2d(y1, self.down, stride=2, padding=1)
        o1, o2 = n[4](F.relu(y1 + up)), n[5](F.relu(y2 + down))
        return torch.cat((o1.flatten(1), o2.flatten(1)), dim=1)


def make(key: str, dtype: torch.dtype = torch.float32) -> Problem:
    """Build problem ``key`` ("a", "b", "c" or "d") from a fixed seed."""
    gen = torch.Generator().manual_seed(1234 + ord(key))
    if key == "a":
        batch, width = 64, 512
        cell = TanhCell(width, radius=0.9, symmetric=True, gen=gen)
        x = 0.3 * torch.randn(batch, width, generator=gen)
        z0 = torch.zeros(batch, width)
        title, max_iter = "contractive tanh, B=64, D=512, ‖W‖₂=0.9 (symmetric)", 50
    elif key == "b":
        batch, seq, d = 16, 64, 128
        cell = TransformerCell(d, heads=4, gen=gen)
        x = torch.randn(batch, seq, d, generator=gen)
        z0 = torch.zeros(batch, seq, d)
        title, max_iter = "transformer block, B=16, T=64, d=128", 50
    elif key == "c":
        batch = 32
        cell = MDEQCell(16, 32, 12, gen=gen)
        width = sum(cell.split)
        x = torch.randn(batch, width, generator=gen)
        z0 = torch.zeros(batch, width)
        title, max_iter = "MDEQ-like 2-branch conv, B=32, 16×12×12 + 32×6×6", 50
    elif key == "d":
        batch, width = 32, 256
        cell = TanhCell(width, radius=0.99, symmetric=False, gen=gen)
        x = 0.1 * torch.randn(batch, width, generator=gen)
        z0 = torch.zeros(batch, width)
        title, max_iter = "hard tanh, B=32, D=256, spectral radius 0.99", 100
    else:
        raise ValueError(f"unknown problem {key!r}; choose one of a, b, c, d")
    cell = cell.to(dtype)
    return Problem(key, title, cell, x.to(dtype), z0.to(dtype), max_iter)


PROBLEMS = ("a", "b", "c", "d")
