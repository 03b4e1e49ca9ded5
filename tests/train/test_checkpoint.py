"""Checkpoints: atomic writes, safe loading, clear errors, RNG round trips; JSONL metrics."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from deqkit.train.checkpoint import (
    FORMAT,
    CheckpointError,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from deqkit.train.logging import MetricsLog, read_metrics


def _state():
    return {"format": FORMAT, "step": 4, "config": {"model": {"name": "m"}}, "model": {}}


def test_save_is_atomic_and_loads_weights_only(tmp_path):
    path = save_checkpoint(tmp_path / "checkpoint.pt", _state())
    save_checkpoint(path, {**_state(), "step": 5})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint.pt"
    ]  # no temp file left behind
    assert load_checkpoint(path)["step"] == 5
    assert load_checkpoint(tmp_path)["step"] == 5  # a run directory means its checkpoint.pt


def test_failed_write_keeps_previous_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", _state())

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(path, {**_state(), "step": 9, "bad": Unpicklable()})
    assert load_checkpoint(path)["step"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_checkpoint_is_a_clear_error(tmp_path, damage):
    path = save_checkpoint(tmp_path / "c.pt", {**_state(), "model": {"w": torch.randn(100)}})
    data = path.read_bytes()
    path.write_bytes(
        {"truncate": data[: len(data) // 2], "garbage": b"\x00junk" * 50, "empty": b""}[damage]
    )
    with pytest.raises(CheckpointError, match="truncated, corrupt or not a torch checkpoint"):
        load_checkpoint(path)


def test_foreign_and_missing_checkpoints(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a deqkit training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    save_checkpoint(tmp_path / "c.pt", {**_state(), "rng": [capture_rng()]})
    first = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    restore_rng(load_checkpoint(tmp_path / "c.pt")["rng"][0])
    again = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(first[0], again[0])
    assert np.array_equal(first[1], again[1]) and first[2] == again[2]


def test_metrics_log_truncates_and_skips_a_torn_line(tmp_path):
    log = MetricsLog(tmp_path / "m.jsonl")
    for step in range(1, 5):
        log.write(kind="train", step=step, loss=float(step), bad=float("nan"))
    log.write(kind="eval", step=4, acc=0.5)
    with open(log.path, "a") as fh:
        fh.write('{"kind": "train", "st')  # a run killed mid-write
    assert [r["step"] for r in read_metrics(log.path, "train")] == [1, 2, 3, 4]
    assert read_metrics(log.path)[0]["bad"] is None  # NaN is not JSON; written as null
    log.truncate_after(2)
    assert [(r["kind"], r["step"]) for r in read_metrics(log.path)] == [("train", 1), ("train", 2)]


class _Custom:
    pass


def test_checkpoint_errors_are_plain_one_liners(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"format": "deqkit-checkpoint-v2", "obj": _Custom()}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    text = str(err.value)
    assert "\x1b" not in text and "weights_only" not in text and "\n" not in text
    assert "holds objects other than tensors and plain values" in text
