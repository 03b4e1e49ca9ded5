"""Batches for training and evaluation: deterministic, shardable over ranks, resumable by step.

Batch ``s`` of a run depends only on (seed, s): the permutation of epoch ``s // steps_per_epoch``
comes from a generator seeded by (seed, epoch). A resumed run therefore needs no sampler state,
and ``world`` ranks split each global batch into disjoint interleaved shards, as
``DistributedSampler`` does, so the global batch equals the single-process one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import ImageSet

__all__ = ["FLIPPABLE", "Preprocess", "eval_batches", "seeded_generator", "train_batch_indices"]

# Datasets whose images stay valid under a horizontal flip (digits and letters do not).
FLIPPABLE = {"cifar10"}


def seeded_generator(*seeds: int) -> torch.Generator:
    """A CPU generator seeded by mixing several integers (seed, epoch, step, rank...)."""
    mixed = 0
    for s in seeds:
        mixed = (mixed * 1_000_003 + int(s)) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


def train_batch_indices(
    n: int, batch_size: int, step: int, seed: int, rank: int = 0, world: int = 1
) -> torch.Tensor:
    """Indices of this rank's share of global training batch ``step`` (0-based).

    >>> a = train_batch_indices(10, 4, step=0, seed=1)
    >>> b = torch.cat([train_batch_indices(10, 4, 0, 1, rank=r, world=2) for r in (0, 1)])
    >>> sorted(a.tolist()) == sorted(b.tolist()), len(a)
    (True, 4)
    """
    if batch_size > n:
        raise ValueError(f"batch_size {batch_size} exceeds the {n} training examples")
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} is not divisible by the {world} processes")
    per_epoch = n // batch_size
    epoch, offset = divmod(step, per_epoch)
    order = torch.randperm(n, generator=seeded_generator(seed, epoch))
    return order[offset * batch_size : (offset + 1) * batch_size][rank::world]


def eval_batches(n: int, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[torch.Tensor]:
    """This rank's evaluation indices in order, in chunks of ``batch_size`` (every index once).

    >>> [b.tolist() for b in eval_batches(5, 2, rank=1, world=2)]
    [[1, 3]]
    """
    mine = torch.arange(rank, n, world)
    yield from mine.split(batch_size)


@dataclass(frozen=True)
class Preprocess:
    """Resize, pad, normalise and (for training) augment image batches.

    Args:
        mean, std: per-channel statistics of the training images (after scaling to [0, 1]).
        resize: square size to resize to (bilinear) before padding; ``None`` keeps the size.
        pad: zero pixels added on every side (background in [0, 1] scale).
        shift: largest random translation in pixels when augmenting (0 turns it off).
        flip: random horizontal flips when augmenting.

    >>> p = Preprocess(mean=(0.5,), std=(0.5,), pad=1)
    >>> p(torch.ones(2, 1, 3, 3)).shape
    torch.Size([2, 1, 5, 5])
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int | None = None
    pad: int = 0
    shift: int = 0
    flip: bool = False

    @classmethod
    def fit(cls, images: ImageSet, **options) -> Preprocess:
        """Statistics from (at most 10k of) the training images."""
        x, _ = images.batch(torch.arange(min(len(images), 10_000)))
        mean = x.mean(dim=(0, 2, 3))
        std = x.std(dim=(0, 2, 3)).clamp_min(1e-6)
        return cls(tuple(mean.tolist()), tuple(std.tolist()), **options)

    def output_size(self, size: int) -> int:
        return (self.resize or size) + 2 * self.pad

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.resize is not None and self.resize != x.shape[-1]:
            x = F.interpolate(
                x, size=(self.resize, self.resize), mode="bilinear", align_corners=False
            )
        if self.pad:
            x = F.pad(x, (self.pad,) * 4)
        if generator is not None:
            x = self._augment(x, generator)
        mean = x.new_tensor(self.mean).view(1, -1, 1, 1)
        std = x.new_tensor(self.std).view(1, -1, 1, 1)
        return (x - mean) / std

    def _augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        batch, _, h, w = x.shape
        if self.shift:
            s = self.shift
            padded = F.pad(x, (s, s, s, s))
            offsets = torch.randint(0, 2 * s + 1, (batch, 2), generator=generator).tolist()
            # A per-sample crop loop is cheap next to the DEQ forward and easy to check.
            x = torch.stack(
                [padded[i, :, a : a + h, b : b + w] for i, (a, b) in enumerate(offsets)]
            )
        if self.flip:
            flip = torch.rand(batch, generator=generator) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        return x
