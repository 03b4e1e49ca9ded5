"""Run construction: validation split, preprocessing restore, schedule, tasks."""

from __future__ import annotations

import pytest
import torch

from deqkit.train.build import build_task, lr_factor, prepare_data
from deqkit.train.errors import ConfigError, DataError
from deqkit.train.recipe import parse


def _cfg(**data):
    return parse({"model": {"name": "mdeq"}, "data": {"name": "digits", **data}})


def test_validation_split_is_carved_from_train():
    data = prepare_data(_cfg(val_fraction=0.1))
    assert (len(data.train), len(data.val), len(data.test)) == (1293, 144, 360)
    rows = {tuple(r) for r in data.train.images.images.flatten(1).tolist()}
    assert sum(tuple(r) in rows for r in data.val.images.images.flatten(1).tolist()) < 3
    again = prepare_data(_cfg(val_fraction=0.1))
    assert torch.equal(again.val.images.labels, data.val.images.labels)


def test_preprocessing_restored_from_the_data_state():
    data = prepare_data(_cfg(pad=2, augment=True, shift=1))
    assert data.info == {"in_channels": 1, "image_size": 12, "num_classes": 10}
    restored = prepare_data(_cfg(), data.state)
    assert restored.train.preprocess == data.train.preprocess and restored.info == data.info


def test_data_errors_are_one_line(tmp_path):
    afile = tmp_path / "f"
    afile.write_text("x")
    cfg = parse({"model": {"name": "mdeq"}, "data": {"name": "mnist", "root": str(afile)}})
    with pytest.raises(DataError, match="is a file, not a folder"):
        prepare_data(cfg)
    cfg = parse({"model": {"name": "mdeq"}, "data": {"name": "mnist", "root": str(tmp_path)}})
    with pytest.raises(DataError, match="has no train-images"):
        prepare_data(cfg)


def test_task_from_the_model_or_the_recipe():
    info = {"num_classes": 10}
    assert build_task(_cfg(), info).name == "classification"
    cfg = parse({"model": {"name": "mdeq"}, "task": {"name": "classification", "smooth": 1}})
    with pytest.raises(ConfigError, match="task 'classification': .*smooth"):
        build_task(cfg, info)


@pytest.mark.parametrize("kind", ["cosine", "constant"])
def test_warmup_then_schedule(kind):
    factors = [lr_factor(s, 10, 3, kind) for s in range(10)]
    assert factors[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    if kind == "constant":
        assert factors[3:] == [1.0] * 7
    else:
        assert all(a >= b for a, b in zip(factors[2:], factors[3:], strict=False))
        assert factors[-1] < 0.1
