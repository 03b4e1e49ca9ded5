"""Images from a local folder as a dataset (``data.name: folder``): PNG/JPEG/BMP/TIFF files are
read, converted to grayscale (``channels: 1``) or colour (``channels: 3``), centre-cropped to a
square and resized (antialiased) to ``resize`` pixels, then split into train and test sets.

Labels: files directly in ``path`` are one class (label 0); a folder of sub-folders with images
(``path/cat/*.png``, ``path/dog/*.png``) gives one class per sub-folder, in sorted order.
The test set is a seeded ``test_fraction`` share of the files (at least one), the same for every
run on the same folder. Pixels are normalised with the training images' statistics, like the
other image sets.

>>> import tempfile, numpy as np
>>> from skimage import io
>>> folder = tempfile.mkdtemp()
>>> for i in range(4):
...     io.imsave(f"{folder}/{i}.png", np.full((10, 12), 60 * i, np.uint8), check_contrast=False)
>>> from deqkit.data.registry import DataContext
>>> data = FOLDER.load(FolderOptions(path=folder, resize=8), DataContext())
>>> len(data.train), len(data.test), data.info
(3, 1, {'in_channels': 1, 'image_size': 8, 'num_classes': 1})
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .base import ImageSet, Splits
from .images import _prepare
from .registry import DataContext, DataSource, DataSplits

__all__ = ["FOLDER", "IMAGE_SUFFIXES", "FolderOptions", "load_image", "load_image_folder"]

#: File endings read as images (case-insensitive); other files in the folder are ignored.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class FolderOptions:
    """Recipe keys of ``data.name: folder``: ``path`` (the folder; or ``data.root``),
    ``resize`` (square output size; needed unless every image is square and the same size),
    ``channels`` (1 grayscale, 3 colour), ``test_fraction`` (held-out share), and the image
    sets' ``pad``/``augment``/``shift``.

    >>> FolderOptions(path="imgs", resize=16).channels
    1
    """

    path: str | None = None
    resize: int | None = None
    channels: int = 1
    test_fraction: float = 0.1
    pad: int = 0
    augment: bool = False
    shift: int = 2

    def __post_init__(self):
        if self.path is not None and not isinstance(self.path, str):
            raise TypeError(f"data.path must be a folder path (a string), got {self.path!r}")
        if self.resize is not None and (
            isinstance(self.resize, bool) or not isinstance(self.resize, int) or self.resize < 1
        ):
            raise ValueError(f"data.resize must be a positive integer, got {self.resize!r}")
        if self.channels not in (1, 3) or isinstance(self.channels, bool):
            raise ValueError(
                f"data.channels must be 1 (grayscale) or 3 (colour), got {self.channels!r}"
            )
        if not isinstance(self.test_fraction, (int, float)) or not 0 < self.test_fraction < 1:
            raise ValueError(f"data.test_fraction must be in (0, 1), got {self.test_fraction!r}")
        for key in ("pad", "shift"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"data.{key} must be an integer >= 0, got {value!r}")
        if not isinstance(self.augment, bool):
            raise TypeError(f"data.augment must be true or false, got {self.augment!r}")


def load_image(path: str | Path, channels: int = 1, size: int | None = None) -> torch.Tensor:
    """One image file as a uint8 tensor (channels, H, W): grayscale (ITU-R 601 luma) or RGB
    (alpha dropped, gray repeated), read by Pillow, centre-cropped to a square and resized to
    ``size`` (antialiased) when given. An unreadable file is a ``ValueError`` naming it.

    >>> import tempfile, numpy as np
    >>> from skimage import io
    >>> p = tempfile.mkdtemp() + "/a.png"
    >>> io.imsave(p, np.zeros((6, 9, 3), np.uint8), check_contrast=False)
    >>> load_image(p, 3, size=4).shape, load_image(p).shape
    (torch.Size([3, 4, 4]), torch.Size([1, 6, 9]))
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            array = np.array(image.convert("L" if channels == 1 else "RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"cannot read image {path}: {reason}") from None
    x = torch.from_numpy(array).float()
    x = x[None] if x.dim() == 2 else x.permute(2, 0, 1)
    if size is not None:
        h, w = x.shape[-2:]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        x = x[:, top : top + side, left : left + side]
        if side != size:
            x = F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True)[0]
    return x.round().clamp(0, 255).to(torch.uint8)


def _image_files(folder: Path) -> tuple[list[Path], list[int], int]:
    def images_in(d: Path) -> list[Path]:
        return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)

    top = images_in(folder)
    classes = [d for d in sorted(folder.iterdir()) if d.is_dir() and images_in(d)]
    if top and classes:
        raise ValueError(
            f"image folder {folder} mixes image files with class sub-folders "
            f"({', '.join(d.name for d in classes[:3])}); use one layout"
        )
    if top:
        return top, [0] * len(top), 1
    files, labels = [], []
    for label, d in enumerate(classes):
        found = images_in(d)
        files += found
        labels += [label] * len(found)
    if not files:
        raise ValueError(
            f"image folder {folder} has no image files ({'/'.join(IMAGE_SUFFIXES)}), "
            "neither directly nor in sub-folders"
        )
    return files, labels, len(classes)


def load_image_folder(
    path: str | Path, resize: int | None = None, channels: int = 1, test_fraction: float = 0.1
) -> Splits:
    """The images of a folder as train/test :class:`Splits` (uint8 (N, C, S, S)).

    >>> load_image_folder("/no/such/folder")
    Traceback (most recent call last):
    ...
    FileNotFoundError: image folder /no/such/folder does not exist
    """
    folder = Path(path).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"image folder {folder} is a file, not a folder")
    files, labels, num_classes = _image_files(folder)
    if len(files) < 2:
        raise ValueError(
            f"image folder {folder} has {len(files)} image; a train/test split needs 2"
        )
    images = [load_image(f, channels, resize) for f in files]
    if resize is None:
        sizes = {tuple(x.shape[-2:]) for x in images}
        if len(sizes) > 1 or any(h != w for h, w in sizes):
            raise ValueError(
                f"images in {folder} have sizes {sorted(sizes)[:4]}; set data.resize to make "
                "them one square size"
            )
    x, y = torch.stack(images), torch.tensor(labels, dtype=torch.int64)
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(0))
    n_test = max(1, round(test_fraction * len(files)))
    test, train = order[:n_test], order[n_test:]
    return Splits(
        "folder", ImageSet(x[train], y[train], num_classes), ImageSet(x[test], y[test], num_classes)
    )


def _folder(opts: FolderOptions, ctx: DataContext) -> DataSplits:
    if opts.path is not None and ctx.root is not None:
        raise ValueError(f"give the folder once: data.path {opts.path!r} or data.root {ctx.root}")
    path = opts.path if opts.path is not None else ctx.root
    if path is None:
        raise ValueError("data.name 'folder' needs data.path (a folder of PNG/JPEG images)")
    splits = load_image_folder(path, opts.resize, opts.channels, opts.test_fraction)
    # Images are already at their final size, so the shared preparation does not resize.
    return _prepare(splits, _Resized(opts.pad, opts.augment, opts.shift), ctx)


@dataclass(frozen=True)
class _Resized:
    pad: int
    augment: bool
    shift: int
    resize: None = None


FOLDER = DataSource(
    _folder, FolderOptions, description="PNG/JPEG images from a local folder (data.path)"
)
