"""Signals for implicit neural representations: grids, ranges, the even/odd split, files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deqkit.data.signals import load_signal


@pytest.mark.parametrize("name,channels", [("camera", 1), ("astronaut", 3)])
def test_images_are_coordinates_and_values_in_minus_one_one(name, channels):
    s = load_signal(name, resolution=32)
    assert s.grid == (32, 32) and s.coords.shape == (1024, 2) and s.channels == channels
    assert s.coords.min() == -1.0 and s.coords.max() == 1.0
    assert s.values.min() >= -1.0 and s.values.max() <= 1.0
    assert s.values.std() > 0.2  # a real image, not a constant
    # row-major: sample i sits at grid row i // 32, column i % 32
    assert torch.allclose(s.coords[33], torch.tensor([-1 + 2 / 31, -1 + 2 / 31]))
    assert torch.equal(s.train_index, s.test_index) and len(s.train_index) == 1024


def test_resize_keeps_the_picture():
    small, large = load_signal("camera", resolution=16), load_signal("camera", resolution=64)
    pooled = torch.nn.functional.avg_pool2d(large.as_grid(large.values)[None], 4)[0]
    assert (pooled - small.as_grid(small.values)).abs().mean() < 0.05


def test_generalization_split_trains_on_even_and_tests_on_odd_pixels():
    s = load_signal("camera", resolution=8, split="generalization")
    rows, cols = s.train_index // 8, s.train_index % 8
    assert (rows % 2 == 0).all() and (cols % 2 == 0).all() and len(s.train_index) == 16
    rows, cols = s.test_index // 8, s.test_index % 8
    assert (rows % 2 == 1).all() and (cols % 2 == 1).all() and len(s.test_index) == 16
    assert not set(s.train_index.tolist()) & set(s.test_index.tolist())
    assert s.grid_of(s.train_index) == (4, 4) and s.grid_of(s.test_index) == (4, 4)
    odd = load_signal("camera", resolution=9, split="generalization")
    assert odd.grid_of(odd.train_index) == (5, 5) and odd.grid_of(odd.test_index) == (4, 4)


def test_chirps_is_a_normalised_one_dimensional_signal():
    s = load_signal("chirps", resolution=1000, split="generalization")
    assert s.grid == (1000,) and s.in_features == 1 and s.channels == 1
    assert s.values.abs().max() == pytest.approx(1.0)
    assert len(s.train_index) == len(s.test_index) == 500
    # broadband: the spectrum has energy well beyond the lowest frequencies
    spectrum = np.abs(np.fft.rfft(s.values[:, 0].numpy()))
    assert spectrum[100:].sum() > 0.1 * spectrum.sum()


def test_any_image_file_loads(tmp_path):
    from skimage import io

    image = np.zeros((20, 30, 4), dtype=np.uint8)
    image[:, 15:, 0] = 255  # right half red, alpha channel dropped
    image[..., 3] = 255
    path = tmp_path / "x.png"
    io.imsave(path, image)
    s = load_signal("file", resolution=10, path=path)
    assert s.channels == 3 and s.grid == (10, 10) and s.name == "file:x.png"
    grid = s.as_grid(s.values)
    assert grid[0, :, -1].min() > 0.9 and grid[0, :, 0].max() < -0.9  # centre crop 20x20


@pytest.mark.parametrize(
    "kwargs,error,text",
    [
        ({"name": "lena"}, ValueError, "unknown signal 'lena'"),
        ({"name": "camera", "split": "odd"}, ValueError, "unknown split 'odd'"),
        ({"name": "camera", "resolution": 1}, ValueError, "resolution must be >= 2, got 1"),
        ({"name": "camera", "resolution": 8.0}, TypeError, "resolution must be an int"),
        ({"name": "file"}, ValueError, "needs a path"),
        ({"name": "file", "path": "/nonexistent.png"}, ValueError, "does not exist"),
        ({"name": "camera", "path": "x.png"}, ValueError, "takes no path"),
    ],
)
def test_bad_arguments_raise_one_clear_error(kwargs, error, text):
    with pytest.raises(error, match=text):
        load_signal(**kwargs)


def test_unreadable_image_file_names_the_file(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        load_signal("file", path=path)


def test_the_trainer_source_gives_indexed_full_batches_and_grid_info():
    from deqkit.data import data_source
    from deqkit.data.registry import DataContext

    source = data_source("signal")
    options = source.options(signal="camera", resolution=8, split="generalization")
    data = source.load(options, DataContext())
    assert data.info == {
        "name": "camera", "in_features": 2, "out_features": 1, "num_points": 16,
        "grid": [8, 8], "test_grid": [4, 4],
    }  # fmt: skip
    index = data.train.train_indices(batch_size=10**6, step=3, seed=0)
    assert sorted(index.tolist()) == list(range(16))  # full batch, shuffled
    (coords, positions), values = data.train.batch(index)
    assert torch.equal(positions, index) and coords.shape == (16, 2) and values.shape == (16, 1)
    share = [data.train.train_indices(10**6, 0, 0, rank=r, world=3) for r in range(3)]
    assert sum(len(s) for s in share) == 15 and not set(share[0].tolist()) & set(share[1].tolist())
    with pytest.raises(ValueError, match="no validation split"):
        source.load(options, DataContext(val_fraction=0.1))
    with pytest.raises(ValueError, match="data.signal must be one of"):
        source.options(signal="lena")
