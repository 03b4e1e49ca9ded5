"""Two processes under torchrun (gloo, CPU): replicas stay identical and match one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import tiny_model
import torch

from deqkit.train.checkpoint import load_checkpoint
from deqkit.train.loop import train
from deqkit.train.recipe import load_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path):
    # No dropout: each rank draws its own masks, which would make the runs differ legitimately.
    recipe = tiny_model.write_recipe(
        tmp_path / "tiny.yaml", model={"dropout": 0.0}, train={"eval_every": 0}
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([tiny_model.HERE, os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
        "-m", "deqkit", "train", recipe, "--out", str(tmp_path / "ddp"), "--no-progress",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["replica_max_diff"] == 0.0  # every parameter equal on both ranks
    # Only rank 0 writes: one train record per step, not two.
    lines = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert sum('"kind": "train"' in line for line in lines) == 6

    # Each rank sees half of every global batch, so DDP's averaged gradient is the one-process
    # gradient up to float rounding.
    single = train(load_config(recipe), tmp_path / "one", progress=False)
    ddp_params = load_checkpoint(tmp_path / "ddp")["model"]
    one_params = load_checkpoint(tmp_path / "one")["model"]
    for key, value in one_params.items():
        torch.testing.assert_close(ddp_params[key], value, rtol=1e-4, atol=1e-5)
    assert summary["test_acc"] == pytest.approx(single["test_acc"], abs=1 / 360)
