"""Deterministic sharded batches and preprocessing."""

from __future__ import annotations

import pytest
import torch

from deqkit.data import Preprocess, eval_batches, seeded_generator, train_batch_indices
from deqkit.data.base import ImageSet


def test_train_batches_cover_each_epoch_once_and_depend_on_seed():
    epoch = torch.cat([train_batch_indices(20, 5, s, seed=3) for s in range(4)])
    assert sorted(epoch.tolist()) == list(range(20))
    again = torch.cat([train_batch_indices(20, 5, s, seed=3) for s in range(4)])
    assert torch.equal(epoch, again)
    other = torch.cat([train_batch_indices(20, 5, s, seed=4) for s in range(4)])
    assert not torch.equal(epoch, other)
    next_epoch = torch.cat([train_batch_indices(20, 5, s, seed=3) for s in range(4, 8)])
    assert sorted(next_epoch.tolist()) == list(range(20)) and not torch.equal(next_epoch, epoch)


def test_ranks_split_the_global_batch():
    for step in (0, 7):
        whole = train_batch_indices(23, 6, step, seed=0)
        shards = [train_batch_indices(23, 6, step, seed=0, rank=r, world=3) for r in range(3)]
        assert all(len(s) == 2 for s in shards)
        assert sorted(torch.cat(shards).tolist()) == sorted(whole.tolist())
    with pytest.raises(ValueError, match="not divisible by the 4 processes"):
        train_batch_indices(23, 6, 0, seed=0, world=4)
    with pytest.raises(ValueError, match="exceeds the 23 training examples"):
        train_batch_indices(23, 64, 0, seed=0)


def test_eval_batches_score_every_example_once():
    seen = [i for r in range(3) for b in eval_batches(10, 2, rank=r, world=3) for i in b.tolist()]
    assert sorted(seen) == list(range(10))


def test_preprocess_normalises_pads_and_augments():
    images = ImageSet(torch.rand(50, 1, 8, 8), torch.zeros(50, dtype=torch.long), 1)
    prep = Preprocess.fit(images, pad=4, shift=2)
    x, _ = images.batch(torch.arange(50))
    out = prep(x)
    assert out.shape == (50, 1, 16, 16) and prep.output_size(8) == 16
    assert out[:, :, 4:12, 4:12].mean().abs() < 1e-5  # the statistics are those of the images
    a = prep(x, seeded_generator(0, 5))
    b = prep(x, seeded_generator(0, 5))
    assert torch.equal(a, b) and not torch.equal(a, out)
    # A shift moves content; it neither creates nor scales pixel values.
    assert torch.isclose(a.max(), out.max()) and a.shape == out.shape
    resized = Preprocess(mean=(0.0,), std=(1.0,), resize=28)(x)
    assert resized.shape == (50, 1, 28, 28)
