"""Each MDEQ recipe trains 3 steps through the CLI (model, DEQ, loss and optimiser sections as
shipped). The data is swapped for the bundled digits (8x8): MNIST's 10k-image evaluation at
budget 32 alone takes ~45 s on a CPU, and CIFAR-10 is not available offline; the data section
itself is covered by the data tests. The large recipe runs on the CPU here."""

from __future__ import annotations

import json

import pytest

from deqkit.cli import main

SMALL = ["data.name=digits", "data.root=null", "data.augment=false", "data.batch_size=16"]
STEPS = ["train.steps=3", "train.pretrain_steps=1", "train.eval_every=3",
         "train.checkpoint_every=3", "train.log_every=1", "train.device=cpu"]  # fmt: skip


@pytest.mark.parametrize(
    "recipe",
    ["mdeq-mnist", "mdeq-cifar10-tiny", pytest.param("mdeq-cifar10", marks=pytest.mark.slow)],
)
def test_recipe_trains_three_steps_through_the_cli(recipe, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", recipe, "--out", str(out), "--no-progress"]
    for item in SMALL + STEPS:
        args += ["--set", item]
    assert main(args) == 0
    capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 3
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 3 and all(r["loss"] == r["loss"] for r in train)  # finite, not NaN
    assert [r["kind"] for r in records if r["kind"] == "eval"] == ["eval"]
