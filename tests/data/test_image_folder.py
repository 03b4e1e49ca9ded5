"""``data.name: folder``: PNG/JPEG files in a directory become grayscale or colour tensors at a
chosen resolution; a missing or empty folder and an unreadable file are one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import io

from deqkit.data import data_source
from deqkit.data.image_folder import FolderOptions, load_image, load_image_folder
from deqkit.data.registry import DataContext
from deqkit.train.build import prepare_data
from deqkit.train.errors import ConfigError, DataError
from deqkit.train.recipe import parse


def _save(path, array):
    io.imsave(str(path), array, check_contrast=False)


def _folder(tmp_path, n=6, shape=(12, 10, 3)):
    rng = np.random.default_rng(0)
    for i in range(n):
        _save(tmp_path / f"img{i}.png", rng.integers(0, 256, shape, dtype=np.uint8))
    return tmp_path


def test_png_folder_to_grayscale_and_colour_at_a_chosen_size(tmp_path):
    _folder(tmp_path)
    (tmp_path / "notes.txt").write_text("ignored")
    gray = load_image_folder(tmp_path, resize=8, channels=1, test_fraction=0.2)
    colour = load_image_folder(tmp_path, resize=5, channels=3, test_fraction=0.2)
    assert len(gray.train) == 5 and len(gray.test) == 1
    assert gray.train.images.shape == (5, 1, 8, 8) and gray.train.images.dtype == torch.uint8
    assert colour.train.shape == (3, 5, 5) and colour.train.num_classes == 1


def test_pixels_are_the_files_luminance_and_centre_crop(tmp_path):
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[:, 1:5] = (200, 100, 50)  # the centre 4x4 square is one colour, the side columns black
    _save(tmp_path / "a.png", rgb)
    gray = load_image(tmp_path / "a.png", channels=1, size=4)
    assert gray.shape == (1, 4, 4)
    expected = round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)
    assert (gray.int() - expected).abs().max() <= 1
    colour = load_image(tmp_path / "a.png", channels=3, size=2)
    assert colour[:, 0, 0].tolist() == [200, 100, 50]


def test_jpeg_rgba_and_gray_files_mix(tmp_path):
    _save(tmp_path / "a.jpg", np.full((9, 9, 3), 128, np.uint8))
    _save(tmp_path / "b.png", np.full((9, 9, 4), 255, np.uint8))
    _save(tmp_path / "c.png", np.full((9, 9), 10, np.uint8))
    splits = load_image_folder(tmp_path, resize=9, channels=3, test_fraction=0.3)
    assert splits.train.images.shape[1:] == (3, 9, 9)
    assert len(splits.train) + len(splits.test) == 3


def test_class_subfolders_are_labels(tmp_path):
    for name in ("b_dogs", "a_cats"):
        (tmp_path / name).mkdir()
        _folder(tmp_path / name, n=3, shape=(8, 8))
    splits = load_image_folder(tmp_path, test_fraction=0.5)
    labels = torch.cat([splits.train.labels, splits.test.labels])
    assert splits.train.num_classes == 2 and sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]


def test_the_registered_source_normalises_and_the_split_is_fixed(tmp_path):
    _folder(tmp_path, n=10, shape=(8, 8))
    source = data_source("folder")
    a = source.load(FolderOptions(path=str(tmp_path)), DataContext(seed=1))
    b = source.load(FolderOptions(path=str(tmp_path)), DataContext(seed=2))
    assert a.info == {"in_channels": 1, "image_size": 8, "num_classes": 1}
    x, _ = a.train.batch(torch.arange(len(a.train)))
    assert abs(x.mean().item()) < 1e-5 and abs(x.std().item() - 1) < 0.05
    assert torch.equal(a.test.batch(torch.tensor([0]))[0], b.test.batch(torch.tensor([0]))[0])


def _prepare(data):
    return prepare_data(parse({"model": {"name": "deq_ddim"}, "data": {"name": "folder", **data}}))


@pytest.mark.parametrize(
    ("make", "data", "message"),
    [
        (lambda p: None, {"path": "{p}/missing"}, "image folder .*/missing does not exist"),
        (lambda p: None, {"path": "{p}"}, "has no image files"),
        (
            lambda p: (_folder(p, 2), (p / "x.png").write_bytes(b"not a png")),
            {"path": "{p}"},
            "cannot read image .*x.png",
        ),  # fmt: skip
        (lambda p: _folder(p, 1), {"path": "{p}"}, "needs 2"),
        (
            lambda p: (_folder(p, 2), _save(p / "z.png", np.zeros((5, 7), np.uint8))),
            {"path": "{p}"},
            "set data.resize",
        ),  # fmt: skip
        (lambda p: None, {}, "needs data.path"),
    ],
)
def test_user_mistakes_are_one_line_data_errors(tmp_path, make, data, message):
    make(tmp_path)
    data = {k: v.format(p=tmp_path) for k, v in data.items()}
    with pytest.raises(DataError, match=message) as info:
        _prepare(data)
    assert "\n" not in str(info.value)


def test_bad_options_are_config_errors(tmp_path):
    for data in ({"channels": 2}, {"test_fraction": 1.0}, {"resize": 0}, {"colour": True}):
        with pytest.raises(ConfigError, match="data"):
            _prepare({"path": str(tmp_path), **data})
