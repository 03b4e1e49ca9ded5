"""An in-memory labelled image set and the train/test pair every loader returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ImageSet", "Splits"]


@dataclass(frozen=True)
class ImageSet:
    """Images (N, C, H, W) and integer labels (N,), held in memory.

    Images keep their stored dtype (uint8 for CIFAR-10 saves 4x memory); :meth:`batch` returns
    float32 in [0, 1].

    >>> s = ImageSet(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 1]), 2)
    >>> len(s), s.batch(torch.tensor([2, 0]))[0].shape
    (3, torch.Size([2, 1, 2, 2]))
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    def __post_init__(self):
        if self.images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must have shape ({self.images.shape[0]},), got {tuple(self.labels.shape)}"
            )
        if len(self.labels) and not (
            0 <= int(self.labels.min()) <= int(self.labels.max()) < self.num_classes
        ):
            raise ValueError(f"labels must lie in [0, {self.num_classes}), got values outside")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images as float32 in [0, 1] and labels for the given indices."""
        images = self.images[index]
        if images.dtype == torch.uint8:
            images = images.float().div_(255.0)
        return images.float(), self.labels[index]

    def subset(self, index: torch.Tensor) -> ImageSet:
        return ImageSet(self.images[index], self.labels[index], self.num_classes)


@dataclass(frozen=True)
class Splits:
    """What a dataset loader returns: a train set, a test set and the dataset's name."""

    name: str
    train: ImageSet
    test: ImageSet

    def __post_init__(self):
        if self.train.shape != self.test.shape:
            raise ValueError(f"train {self.train.shape} and test {self.test.shape} shapes differ")
