"""Signals for implicit neural representations: coordinates in [−1, 1] → values in [−1, 1].

An implicit neural representation fits one signal: the network maps a pixel's (or a sample's)
coordinate to its value. Images come from scikit-image (``camera`` grayscale, ``astronaut``
colour, both bundled with the package) or from any local image file; ``chirps`` is a 1-D
audio-like sum of chirps. The generalisation split of (Implicit)² (Huang, Bai, Kolter, NeurIPS
2021) trains on the pixels [::2, ::2] and tests on [1::2, 1::2]; the ``full`` split trains on every
sample and tests on the same samples (pure representation).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .loader import train_batch_indices
from .registry import DataContext, DataSource, DataSplits

__all__ = ["SIGNALS", "SOURCE", "SPLITS", "Signal", "SignalOptions", "SignalSet", "load_signal"]

#: Signal names accepted by :func:`load_signal` (``file`` needs ``path``).
SIGNALS = ("camera", "astronaut", "chirps", "file")
#: ``full``: train and test on every sample; ``generalization``: even train, odd test.
SPLITS = ("full", "generalization")


@dataclass(frozen=True)
class Signal:
    """One sampled signal on a regular grid, flattened, with its train and test samples.

    Args:
        name: where it came from.
        coords: (N, d) float32 grid coordinates in [−1, 1], row-major over ``grid``.
        values: (N, C) float32 values in [−1, 1].
        grid: the grid shape, (H, W) for images and (T,) for 1-D signals; N = prod(grid).
        train_index, test_index: long indices into the N samples.

    >>> s = load_signal("camera", resolution=8, split="generalization")
    >>> s.coords.shape, s.values.shape, len(s.train_index), len(s.test_index)
    (torch.Size([64, 2]), torch.Size([64, 1]), 16, 16)
    """

    name: str
    coords: torch.Tensor
    values: torch.Tensor
    grid: tuple[int, ...]
    train_index: torch.Tensor
    test_index: torch.Tensor

    @property
    def channels(self) -> int:
        """Number of value channels C (1 grayscale/audio, 3 colour)."""
        return self.values.shape[1]

    @property
    def in_features(self) -> int:
        """Coordinate dimension d."""
        return self.coords.shape[1]

    def as_grid(self, values: torch.Tensor) -> torch.Tensor:
        """Reshape (N, C) values onto the grid: (C, H, W) for images, (C, T) for 1-D."""
        return values.T.reshape(values.shape[1], *self.grid)

    def grid_of(self, index: torch.Tensor) -> tuple[int, ...]:
        """The sub-grid shape that ``train_index``/``test_index`` cover (for SSIM and pictures)."""
        if len(index) == len(self.coords):
            return self.grid
        offsets = _offsets(self, index)
        return tuple((n + 1 - o) // 2 for n, o in zip(self.grid, offsets, strict=True))


def _offsets(signal: Signal, index: torch.Tensor) -> tuple[int, ...]:
    first = int(index[0])
    offsets = []
    for n in reversed(signal.grid):
        offsets.append(first % n)
        first //= n
    return tuple(reversed(offsets))


def _grid_coords(grid: tuple[int, ...]) -> torch.Tensor:
    axes = [torch.linspace(-1.0, 1.0, n) for n in grid]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=1)


def _image(name: str, path: str | Path | None) -> np.ndarray:
    from skimage import data as skdata
    from skimage import io

    if name == "file":
        if path is None:
            raise ValueError("signal 'file' needs a path to an image file")
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"image file {str(path)!r} does not exist or is not a file")
        try:
            image = io.imread(path)
        except Exception as err:  # any decoder error becomes one line naming the file
            raise ValueError(f"cannot read image {str(path)!r}: {err}") from None
    else:
        if path is not None:
            raise ValueError(f"signal {name!r} ships with scikit-image and takes no path")
        image = skdata.camera() if name == "camera" else skdata.astronaut()
    if image.ndim == 3 and image.shape[2] == 4:  # drop alpha
        image = image[..., :3]
    if image.ndim not in (2, 3):
        raise ValueError(f"expected a grayscale or RGB image, got an array of shape {image.shape}")
    return image


def _resize_square(image: np.ndarray, resolution: int) -> np.ndarray:
    from skimage import img_as_float
    from skimage.transform import resize

    # Centre-crop to a square first so that pixels stay square, then anti-aliased resize.
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    image = img_as_float(image[top : top + side, left : left + side])
    out_shape = (resolution, resolution) + image.shape[2:]
    return resize(image, out_shape, anti_aliasing=True)


def _chirps(length: int) -> tuple[np.ndarray, tuple[int, ...]]:
    # Three linear chirps with different start frequencies and sweeps plus a decaying tone:
    # broadband and non-stationary like speech, deterministic so no file is needed.
    t = np.linspace(-1.0, 1.0, length)
    wave = (
        np.sin(2 * np.pi * (4 * t + 20 * t**2))
        + 0.6 * np.sin(2 * np.pi * (40 * t - 15 * t**2) + 1.0)
        + 0.4 * np.sin(2 * np.pi * (90 * t + 30 * t**2) + 2.0)
        + 0.5 * np.exp(-3 * (t + 1)) * np.sin(2 * np.pi * 150 * t)
    )
    return wave / np.abs(wave).max(), (length,)


def _check_resolution(resolution: object, minimum: int) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, int):
        raise TypeError(f"resolution must be an int, got {resolution!r}")
    if resolution < minimum:
        raise ValueError(f"resolution must be >= {minimum}, got {resolution}")
    return resolution


def load_signal(
    name: str,
    resolution: int = 256,
    split: str = "full",
    path: str | Path | None = None,
) -> Signal:
    """Load a signal as flattened coordinates and values, with its train/test split.

    Args:
        name: "camera", "astronaut", "chirps" (1-D) or "file" (an image at ``path``).
        resolution: side length of the square image (centre-cropped, anti-aliased resize) or the
            number of samples of the 1-D signal.
        split: "full" (train = test = every sample) or "generalization" (train on the even grid
            points, [::2, ::2] for images, test on the odd ones, [1::2, 1::2]).
        path: image file for ``name="file"``.

    Returns:
        A :class:`Signal`; values are scaled from [0, 1] (images) or [−1, 1] (audio) to [−1, 1].

    >>> s = load_signal("astronaut", resolution=16)
    >>> s.grid, s.channels, float(s.values.min()) >= -1.0, float(s.values.max()) <= 1.0
    ((16, 16), 3, True, True)
    >>> load_signal("lena")
    Traceback (most recent call last):
    ...
    ValueError: unknown signal 'lena'; choose one of ('camera', 'astronaut', 'chirps', 'file')
    """
    if name not in SIGNALS:
        raise ValueError(f"unknown signal {name!r}; choose one of {SIGNALS}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    if name == "chirps":
        if path is not None:
            raise ValueError("signal 'chirps' is synthetic and takes no path")
        wave, grid = _chirps(_check_resolution(resolution, 4))
        values = torch.as_tensor(wave, dtype=torch.float32).reshape(-1, 1)
    else:
        image = _resize_square(_image(name, path), _check_resolution(resolution, 2))
        grid = image.shape[:2]
        channels = 1 if image.ndim == 2 else image.shape[2]
        values = torch.as_tensor(image, dtype=torch.float32).reshape(-1, channels) * 2 - 1
    values = values.clamp(-1.0, 1.0)
    coords = _grid_coords(grid)
    index = torch.arange(coords.shape[0]).reshape(grid)
    if split == "full":
        train = test = index.reshape(-1)
    else:
        even = tuple(slice(0, None, 2) for _ in grid)
        odd = tuple(slice(1, None, 2) for _ in grid)
        train, test = index[even].reshape(-1), index[odd].reshape(-1)
    label = name if path is None else f"file:{Path(path).name}"
    return Signal(label, coords, values, tuple(grid), train.clone(), test.clone())


class SignalSet:
    """The train or test samples of a :class:`Signal` as a trainer data set.

    ``batch(i)`` returns ``((coords, i), values)``: the positions ``i`` inside this set key the
    per-coordinate amortisation cache. A batch size at least the set's size means full batch
    (every coordinate each step, the (Implicit)² setting).

    >>> s = load_signal("camera", resolution=4)
    >>> train = SignalSet(s, s.train_index)
    >>> (coords, i), values = train.batch(torch.tensor([5, 0]))
    >>> coords.shape, i.tolist(), values.shape, len(train.train_indices(10**6, 0, 0)), len(train)
    (torch.Size([2, 2]), [5, 0], torch.Size([2, 1]), 16, 16)
    """

    def __init__(self, signal: Signal, index: torch.Tensor):
        self.signal, self.index = signal, index

    def __len__(self) -> int:
        return len(self.index)

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None):
        """Coordinates, their positions in this set, and the values at them."""
        rows = self.index[index]
        return (self.signal.coords[rows], index), self.signal.values[rows]

    def train_indices(
        self, batch_size: int, step: int, seed: int, rank: int = 0, world: int = 1
    ) -> torch.Tensor:
        """This rank's share of training batch ``step``; capped at the whole set.

        The arguments follow :func:`~deqkit.data.train_batch_indices` (without ``n``), the order
        in which the trainer passes them.
        """
        n = len(self)
        size = min(batch_size, n - n % world)
        return train_batch_indices(n, size, step, seed, rank, world)


@dataclass(frozen=True)
class SignalOptions:
    """The recipe's ``data`` keys of the ``signal`` dataset (see :func:`load_signal`).

    >>> SignalOptions(signal="astronaut").resolution
    256
    """

    signal: str = "camera"
    resolution: int = 256
    split: str = "full"
    path: str | None = None

    def __post_init__(self):
        if self.signal not in SIGNALS:
            raise ValueError(f"data.signal must be one of {SIGNALS}, got {self.signal!r}")
        if self.split not in SPLITS:
            raise ValueError(f"data.split must be one of {SPLITS}, got {self.split!r}")
        _check_resolution(self.resolution, 2)
        if self.path is not None and not isinstance(self.path, str):
            raise TypeError(f"data.path must be a string, got {self.path!r}")


def _load(options: SignalOptions, context: DataContext) -> DataSplits:
    if context.val_fraction:
        raise ValueError(
            "the signal dataset has no validation split: its test samples are the held-out "
            f"coordinates (data.split); got data.val_fraction={context.val_fraction}"
        )
    signal = load_signal(options.signal, options.resolution, options.split, options.path)
    info = {
        "name": signal.name,
        "in_features": signal.in_features,
        "out_features": signal.channels,
        "num_points": len(signal.train_index),
        "grid": list(signal.grid),
        "test_grid": list(signal.grid_of(signal.test_index)),
    }
    return DataSplits(SignalSet(signal, signal.train_index), SignalSet(signal, signal.test_index),
                      info)  # fmt: skip


#: The ``signal`` dataset of the trainer (``data: {name: signal, signal: camera, ...}``).
SOURCE = DataSource(
    load=_load,
    options=SignalOptions,
    description="one signal to fit: camera/astronaut (scikit-image), chirps (1-D), an image file",
)
