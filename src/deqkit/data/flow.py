"""Optical-flow datasets for recipes: ``flow_synthetic`` (pairs made on the fly from the
scikit-image photographs, tested on held-out photographs or on the real Middlebury motorcycle
pair) and ``flow_folder`` (FlyingChairs, FlyingThings3D, MPI-Sintel or KITTI-2015 from
``data.root``).

A batch is a dict: ``image1``, ``image2`` (B, 3, H, W) in [0, 1], ``flow`` (B, 2, H, W) with 0
where there is no ground truth, and ``valid`` (B, H, W) bool.

>>> import torch
>>> data = SOURCE.load(SyntheticFlowOptions(size=(32, 48), test_pairs=4), DataContext())
>>> batch = data.test.batch(torch.arange(2))
>>> sorted(batch), tuple(batch["flow"].shape), data.info["image_size"]
(['flow', 'image1', 'image2', 'valid'], (2, 2, 32, 48), [32, 48])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .flow_io import FlowPair, chairs_pairs, kitti_pairs, sintel_pairs, things_pairs
from .flow_synthetic import heldout_photos, motorcycle_pair, photometric, random_pair, train_photos
from .registry import DataContext, DataSource, DataSplits

__all__ = [
    "FOLDER_SOURCE",
    "SOURCE",
    "FolderFlowOptions",
    "FolderFlowSet",
    "PairList",
    "SyntheticFlowOptions",
    "SyntheticFlowSet",
]

_TEST_SETS = ("synthetic", "motorcycle")
_LAYOUTS = ("chairs", "things", "sintel", "kitti")


def _size(name: str, value) -> tuple[int, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise TypeError(f"{name} must be [height, width], got {value!r}")
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 8 or v % 8 for v in value):
        raise ValueError(f"{name} must hold multiples of 8 (>= 8), got {value!r}")
    return int(value[0]), int(value[1])


def _stack(samples: list[dict]) -> dict[str, torch.Tensor]:
    batch = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
    batch["valid"] = batch["valid"] & torch.isfinite(batch["flow"]).all(1)
    batch["flow"] = torch.nan_to_num(batch["flow"], nan=0.0)
    return batch


@dataclass(frozen=True)
class SyntheticFlowOptions:
    """Recipe keys of ``flow_synthetic``.

    Args:
        size: [height, width] of the pairs (multiples of 8).
        train_pairs: length of an epoch of random training pairs (each batch is drawn anew).
        test_pairs: held-out pairs from photographs never used in training (fixed per index).
        max_shift: largest translation in px; rotation ±3°, scale ±5% and ``nonrigid`` px of
            smooth bumps come on top.
        nonrigid: amplitude of the smooth non-rigid motion in px.
        photometric: colour jitter and noise on training pairs.
        test_set: "synthetic" (held-out pairs) or "motorcycle" (the real Middlebury pair).
        motorcycle_size: [height, width] of the motorcycle pair (default: ``size``).
    """

    size: tuple[int, int] = (64, 96)
    train_pairs: int = 100_000
    test_pairs: int = 64
    max_shift: float = 6.0
    nonrigid: float = 2.0
    photometric: bool = True
    test_set: str = "synthetic"
    motorcycle_size: tuple[int, int] | None = None

    def __post_init__(self):
        object.__setattr__(self, "size", _size("data.size", self.size))
        if self.motorcycle_size is not None:
            object.__setattr__(
                self, "motorcycle_size", _size("data.motorcycle_size", self.motorcycle_size)
            )
        for key in ("train_pairs", "test_pairs"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"data.{key} must be a positive int, got {value!r}")
        for key in ("max_shift", "nonrigid"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"data.{key} must be a number >= 0, got {value!r}")
        if not isinstance(self.photometric, bool):
            raise TypeError(f"data.photometric must be a bool, got {self.photometric!r}")
        if self.test_set not in _TEST_SETS:
            raise ValueError(f"data.test_set must be one of {_TEST_SETS}, got {self.test_set!r}")


class SyntheticFlowSet:
    """Random pairs from ``photos``: a training batch draws from the trainer's generator; an
    evaluation batch makes pair i from seed ``seed + i``, so the test set is fixed."""

    def __init__(self, photos, options: SyntheticFlowOptions, length: int, seed: int, train: bool):
        self.photos, self.options, self.length = photos, options, length
        self.seed, self.train = seed, train

    def __len__(self) -> int:
        return self.length

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None):
        o = self.options
        samples = []
        for i in index.tolist():
            g = generator if generator is not None else torch.Generator().manual_seed(self.seed + i)
            pair = random_pair(self.photos, o.size, g, o.max_shift, o.nonrigid)
            if self.train and o.photometric and generator is not None:
                pair["image1"], pair["image2"] = photometric(pair["image1"], pair["image2"], g)
            samples.append(pair)
        return _stack(samples)


class PairList:
    """A fixed list of pair dicts (e.g. the motorcycle pair)."""

    def __init__(self, pairs: list[dict]):
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None):
        return _stack([self.pairs[i] for i in index.tolist()])


def _load_synthetic(options: SyntheticFlowOptions, context: DataContext) -> DataSplits:
    if context.val_fraction:
        raise ValueError(
            "flow_synthetic has no validation split (its test pairs are held-out photographs); "
            f"set data.val_fraction to 0, got {context.val_fraction}"
        )
    train = SyntheticFlowSet(train_photos(), options, options.train_pairs, context.seed, True)
    if options.test_set == "motorcycle":
        test = PairList([motorcycle_pair(options.motorcycle_size or options.size)])
    else:
        test = SyntheticFlowSet(heldout_photos(), options, options.test_pairs, 10**6, False)
    info = {"in_channels": 3, "image_size": list(options.size)}
    return DataSplits(train=train, test=test, info=info)


#: Synthetic pairs from scikit-image photographs (``data.name: flow_synthetic``).
SOURCE = DataSource(
    _load_synthetic,
    SyntheticFlowOptions,
    description="optical-flow pairs warped from scikit-image photographs, exact ground truth",
)


@dataclass(frozen=True)
class FolderFlowOptions:
    """Recipe keys of ``flow_folder``.

    Args:
        layout: "chairs" (FlyingChairs), "things" (FlyingThings3D), "sintel" (MPI-Sintel
            training) or "kitti" (KITTI-2015).
        crop: [height, width] of random training crops (multiples of 8).
        sintel_pass: "clean" or "final" (Sintel and FlyingThings3D).
        test_fraction: the last share of pairs held out for testing (FlyingChairs uses its
            ``FlyingChairs_train_val.txt`` split instead when present).
        photometric: colour jitter and noise on training crops.
    """

    layout: str = "chairs"
    crop: tuple[int, int] = (368, 496)
    sintel_pass: str = "clean"
    test_fraction: float = 0.1
    photometric: bool = True

    def __post_init__(self):
        if self.layout not in _LAYOUTS:
            raise ValueError(f"data.layout must be one of {_LAYOUTS}, got {self.layout!r}")
        object.__setattr__(self, "crop", _size("data.crop", self.crop))
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"data.test_fraction must be in (0, 1), got {self.test_fraction!r}")


class FolderFlowSet:
    """Pairs read from files: random crops (and photometric jitter) for training, the largest
    centred crop of a multiple of 8 for evaluation."""

    def __init__(self, pairs: list[FlowPair], crop: tuple[int, int] | None, jitter: bool):
        self.pairs, self.crop, self.jitter = pairs, crop, jitter

    def __len__(self) -> int:
        return len(self.pairs)

    def _sample(self, pair: FlowPair, g: torch.Generator | None) -> dict:
        im1, im2, flow = pair.load()
        h, w = flow.shape[:2]
        if g is not None and self.crop is not None:
            ch, cw = self.crop
            if ch > h or cw > w:
                raise ValueError(f"data.crop {self.crop} exceeds the image size {(h, w)}")
            top = int(torch.randint(h - ch + 1, (), generator=g))
            left = int(torch.randint(w - cw + 1, (), generator=g))
        else:
            ch, cw = h // 8 * 8, w // 8 * 8
            top, left = (h - ch) // 2, (w - cw) // 2

        def cut(a):
            return torch.from_numpy(np.ascontiguousarray(a[top : top + ch, left : left + cw]))

        image1, image2 = (cut(im).permute(2, 0, 1).float() / 255.0 for im in (im1, im2))
        if g is not None and self.jitter:
            image1, image2 = photometric(image1, image2, g)
        target = cut(flow).permute(2, 0, 1).float()
        return {"image1": image1, "image2": image2, "flow": target,
                "valid": torch.isfinite(target).all(0)}  # fmt: skip

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None):
        return _stack([self._sample(self.pairs[i], generator) for i in index.tolist()])


def _load_folder(options: FolderFlowOptions, context: DataContext) -> DataSplits:
    if context.root is None:
        raise ValueError(f"flow_folder ({options.layout}) needs data.root, the dataset folder")
    if options.layout == "chairs":
        pairs, held = chairs_pairs(context.root, "train"), chairs_pairs(context.root, "val")
        if len(held) == len(pairs):  # no split file: both lists hold everything
            held = []
    elif options.layout == "things":
        pairs, held = things_pairs(context.root, options.sintel_pass), []
    elif options.layout == "sintel":
        pairs, held = sintel_pairs(context.root, options.sintel_pass), []
    else:
        pairs, held = kitti_pairs(context.root), []
    if not pairs:
        raise ValueError(f"no {options.layout} pairs found under {context.root}")
    if not held:
        n_test = max(1, round(options.test_fraction * len(pairs)))
        pairs, held = pairs[:-n_test] or pairs, pairs[-n_test:]
    train = FolderFlowSet(pairs, options.crop, options.photometric)
    info = {"in_channels": 3, "image_size": list(options.crop)}
    return DataSplits(train=train, test=FolderFlowSet(held, None, False), info=info)


#: FlyingChairs / Sintel / KITTI-2015 from a local folder (``data.name: flow_folder``).
FOLDER_SOURCE = DataSource(
    _load_folder,
    FolderFlowOptions,
    needs_root=True,
    description="FlyingChairs, FlyingThings3D, MPI-Sintel or KITTI-2015 flow from data.root",
)
