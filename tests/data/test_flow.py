"""Optical-flow data: .flo / KITTI PNG readers on files written here byte by byte, the
FlyingChairs / Sintel / KITTI-2015 folder layouts, synthetic warps with exact ground truth, the
motorcycle pair and smooth sequences."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from deqkit.data import DataContext, data_source
from deqkit.data.flow import FolderFlowOptions, SyntheticFlowOptions
from deqkit.data.flow_io import read_flo, read_kitti_flow, write_flo
from deqkit.data.flow_synthetic import (
    Motion,
    heldout_photos,
    motorcycle_pair,
    photometric,
    random_pair,
    sample_bilinear,
    smooth_sequence,
    train_photos,
)


def _flo_bytes(flow: np.ndarray) -> bytes:
    # The Middlebury layout, written independently of write_flo: "PIEH", width, height, then
    # row-major (u, v) float32 pairs, little-endian.
    h, w, _ = flow.shape
    return b"PIEH" + struct.pack("<ii", w, h) + flow.astype("<f4").tobytes()


def _kitti_png(path, flow: np.ndarray, valid: np.ndarray) -> None:
    import png

    h, w, _ = flow.shape
    rgb = np.zeros((h, w, 3), np.uint16)
    rgb[..., :2] = np.round(flow * 64 + 2**15).astype(np.uint16)
    rgb[..., 2] = valid
    with open(path, "wb") as f:
        png.Writer(w, h, greyscale=False, bitdepth=16).write(f, rgb.reshape(h, -1))


def test_flo_reader_reads_the_exact_format_and_the_writer_matches_it(tmp_path):
    flow = np.random.default_rng(0).normal(size=(3, 5, 2)).astype(np.float32)
    (tmp_path / "a.flo").write_bytes(_flo_bytes(flow))
    assert np.array_equal(read_flo(tmp_path / "a.flo"), flow)
    write_flo(tmp_path / "b.flo", flow)
    assert (tmp_path / "b.flo").read_bytes() == _flo_bytes(flow)
    unknown = flow.copy()
    unknown[1, 2] = 1e10  # Middlebury's "unknown flow"
    (tmp_path / "c.flo").write_bytes(_flo_bytes(unknown))
    assert np.isnan(read_flo(tmp_path / "c.flo")[1, 2]).all()
    (tmp_path / "d.flo").write_bytes(_flo_bytes(flow)[:-4])
    with pytest.raises(ValueError, match="header says 5x3"):
        read_flo(tmp_path / "d.flo")


def test_kitti_png_reader(tmp_path):
    flow = np.array([[[1.5, -2.25], [100.0, 0.0]], [[0.0, 0.0], [-3.0, 7.0]]], np.float32)
    valid = np.array([[1, 1], [0, 1]])
    _kitti_png(tmp_path / "f.png", flow, valid)
    out = read_kitti_flow(tmp_path / "f.png")
    assert np.isnan(out[1, 0]).all()
    assert np.array_equal(out[valid == 1], flow[valid == 1])


def _image(rng, h, w):
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _save(path, image):
    from skimage import io

    path.parent.mkdir(parents=True, exist_ok=True)
    io.imsave(str(path), image, check_contrast=False)


def test_folder_layouts_read_through_the_data_source(tmp_path):
    rng = np.random.default_rng(1)
    h, w = 20, 28
    flows = rng.normal(size=(3, h, w, 2)).astype(np.float32)
    # FlyingChairs: data/NNNNN_img1.ppm, _img2.ppm, _flow.flo and the train/val split file.
    chairs = tmp_path / "chairs"
    for i in range(3):
        _save(chairs / "data" / f"{i + 1:05d}_img1.ppm", _image(rng, h, w))
        _save(chairs / "data" / f"{i + 1:05d}_img2.ppm", _image(rng, h, w))
        (chairs / "data" / f"{i + 1:05d}_flow.flo").write_bytes(_flo_bytes(flows[i]))
    (chairs / "FlyingChairs_train_val.txt").write_text("1\n2\n1\n")
    # Sintel: training/<pass>/<scene>/frame_NNNN.png, training/flow/<scene>/frame_NNNN.flo.
    sintel = tmp_path / "sintel"
    for i in range(3):
        _save(sintel / "training" / "clean" / "alley" / f"frame_{i + 1:04d}.png", _image(rng, h, w))
    for i in range(2):
        path = sintel / "training" / "flow" / "alley" / f"frame_{i + 1:04d}.flo"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_flo_bytes(flows[i]))
    # KITTI-2015: training/image_2/NNNNNN_10.png, _11.png, training/flow_occ/NNNNNN_10.png.
    kitti = tmp_path / "kitti"
    valid = rng.random((h, w)) > 0.3
    for i in range(2):
        _save(kitti / "training" / "image_2" / f"{i:06d}_10.png", _image(rng, h, w))
        _save(kitti / "training" / "image_2" / f"{i:06d}_11.png", _image(rng, h, w))
        (kitti / "training" / "flow_occ").mkdir(parents=True, exist_ok=True)
        _kitti_png(kitti / "training" / "flow_occ" / f"{i:06d}_10.png", flows[i], valid)

    source = data_source("flow_folder")
    g = torch.Generator().manual_seed(0)
    for layout, root, n_train, n_test in (("chairs", chairs, 2, 1), ("sintel", sintel, 1, 1),
                                          ("kitti", kitti, 1, 1)):  # fmt: skip
        data = source.load(FolderFlowOptions(layout=layout, crop=(16, 24)), DataContext(root))
        assert (len(data.train), len(data.test)) == (n_train, n_test)
        train = data.train.batch(torch.arange(n_train), g)
        assert train["image1"].shape == (n_train, 3, 16, 24) and train["flow"].shape[-2:] == (
            16,
            24,
        )
        test = data.test.batch(torch.arange(1))  # centred crop to multiples of 8
        assert test["flow"].shape == (1, 2, 16, 24)
    # The chairs test pair is the one marked 2, without jitter: its flow is flows[1], cropped.
    data = source.load(FolderFlowOptions(layout="chairs", crop=(16, 24)), DataContext(chairs))
    test = data.test.batch(torch.arange(1))
    assert torch.equal(test["flow"][0], torch.from_numpy(flows[1][2:18, 2:26]).permute(2, 0, 1))
    data = source.load(FolderFlowOptions(layout="kitti", crop=(16, 24)), DataContext(kitti))
    test = data.test.batch(torch.arange(1))
    assert torch.equal(test["valid"][0], torch.from_numpy(valid[2:18, 2:26]))
    assert (test["flow"][0][:, ~test["valid"][0]] == 0).all()  # no ground truth -> 0, invalid
    with pytest.raises(FileNotFoundError, match="Sintel folder"):
        source.load(FolderFlowOptions(layout="sintel"), DataContext(chairs))


def test_motion_inverse_and_the_warp_ground_truth_reproduce_the_second_frame():
    g = torch.Generator().manual_seed(3)
    motion = Motion.draw((64, 96), g, max_shift=6.0, nonrigid=2.0)
    y = torch.rand(50, 2, dtype=torch.float64) * 60
    x = motion.inverse(y)
    assert (x + motion(x) - y).abs().max() < 1e-6
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(96.0), indexing="ij")
    grid = torch.stack([xs, ys], -1)
    for _ in range(4):
        pair = random_pair(train_photos(), (64, 96), g)
        v = pair["valid"]
        back = sample_bilinear(pair["image2"], grid + pair["flow"].permute(1, 2, 0))
        warped = (back - pair["image1"]).abs().mean(0)[v].mean()
        still = (pair["image2"] - pair["image1"]).abs().mean(0)[v].mean()
        assert warped < 0.02 and warped < 0.25 * still  # interpolation error only
        assert 0.5 < v.float().mean() <= 1.0


def test_photometric_jitter_is_seeded_and_stays_in_range():
    a, b = torch.rand(3, 8, 8), torch.rand(3, 8, 8)
    out1 = photometric(a, b, torch.Generator().manual_seed(0))
    out2 = photometric(a, b, torch.Generator().manual_seed(0))
    assert all(torch.equal(p, q) for p, q in zip(out1, out2, strict=True))
    assert all(0 <= t.min() and t.max() <= 1 for t in out1) and not torch.equal(out1[0], a)


def test_motorcycle_pair_is_stereo_ground_truth():
    pair = motorcycle_pair((64, 96))
    v = pair["valid"]
    assert 0.9 < v.float().mean() <= 1.0
    u = pair["flow"][0][v]
    assert (u < 0).all() and (pair["flow"][1][v] == 0).all()  # u = -disparity, v = 0
    assert torch.isnan(pair["flow"][:, ~v]).all()
    assert 3.0 < u.abs().mean() < 6.0  # disparities 7-60 px at 741 px width, here 96 px


def test_smooth_sequence_flows_warp_each_frame_to_the_next():
    g = torch.Generator().manual_seed(0)
    seq = smooth_sequence(heldout_photos()[0], (32, 48), 5, g, speed=3.0)
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(48.0), indexing="ij")
    grid = torch.stack([xs, ys], -1)
    for t in range(4):
        back = sample_bilinear(seq["images"][t + 1], grid + seq["flows"][t].permute(1, 2, 0))
        err = (back - seq["images"][t]).abs().mean(0)[seq["valid"][t]].mean()
        assert err < 0.03
    steps = seq["flows"].mean((2, 3))
    assert ((steps[1:] - steps[:-1]).norm(dim=1) < 0.6).all()  # the motion changes slowly


def test_synthetic_source_options_and_splits():
    source = data_source("flow_synthetic")
    data = source.load(SyntheticFlowOptions(size=(32, 48), test_pairs=3), DataContext(seed=0))
    a, b = data.test.batch(torch.arange(3)), data.test.batch(torch.arange(3))
    assert torch.equal(a["image1"], b["image1"])  # the test set is fixed
    g = torch.Generator().manual_seed(0)
    assert data.train.batch(torch.arange(2), g)["image1"].shape == (2, 3, 32, 48)
    moto = source.load(SyntheticFlowOptions(test_set="motorcycle"), DataContext())
    batch = moto.test.batch(torch.arange(1))
    assert torch.isfinite(batch["flow"]).all() and not batch["valid"].all()
    with pytest.raises(ValueError, match="multiples of 8"):
        SyntheticFlowOptions(size=(30, 48))
    with pytest.raises(ValueError, match="no validation split"):
        source.load(SyntheticFlowOptions(), DataContext(val_fraction=0.1))
