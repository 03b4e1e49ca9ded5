"""Run construction: validation split, preprocessing restore, schedule."""

from __future__ import annotations

import pytest
import torch

from deqkit.train.build import lr_factor, prepare_data, preprocess_state
from deqkit.train.config import DataConfig


def test_validation_split_is_carved_from_train():
    data = prepare_data(DataConfig(val_fraction=0.1), seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (1293, 144, 360)
    rows = {tuple(r) for r in data.train.images.flatten(1).tolist()}
    assert sum(tuple(r) in rows for r in data.val.images.flatten(1).tolist()) < 3
    again = prepare_data(DataConfig(val_fraction=0.1), seed=0)
    assert torch.equal(again.val.labels, data.val.labels)


def test_preprocessing_restored_from_a_checkpoint_dict():
    data = prepare_data(DataConfig(pad=2, augment=True, shift=1), seed=0)
    assert data.info == {"in_channels": 1, "image_size": 12, "num_classes": 10}
    restored = prepare_data(DataConfig(), seed=0, preprocess=preprocess_state(data.preprocess))
    assert restored.preprocess == data.preprocess and restored.info == data.info


@pytest.mark.parametrize("kind", ["cosine", "constant"])
def test_warmup_then_schedule(kind):
    factors = [lr_factor(s, 10, 3, kind) for s in range(10)]
    assert factors[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    if kind == "constant":
        assert factors[3:] == [1.0] * 7
    else:
        assert all(a >= b for a, b in zip(factors[2:], factors[3:], strict=False))
        assert factors[-1] < 0.1
