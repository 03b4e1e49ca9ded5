"""Two toy tasks defined only through the task interface (toy_tasks.py), trained through the
CLI, killed with SIGKILL mid-run in a real subprocess, resumed to identical parameters,
evaluated and plotted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import toy_tasks

from deqkit.cli import main
from deqkit.train.checkpoint import load_checkpoint
from deqkit.train.logging import read_metrics

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"


def _kill_mid_run(recipe: str, out: Path) -> int:
    """Start ``deqkit train`` in a subprocess, SIGKILL it once a checkpoint exists; returns the
    number of train records logged at that moment."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), str(SRC), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, "-m", "deqkit", "train", recipe, "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while not (out / "checkpoint.pt").is_file():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    return len(read_metrics(out / "metrics.jsonl", "train"))


# Each costs a subprocess start (torch import) and ~150 tiny steps: the second is a slow test.
@pytest.mark.parametrize("kind", ["regression", pytest.param("chars", marks=pytest.mark.slow)])
def test_toy_task_cli_sigkill_resume_eval_plot(kind, tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    torch.set_num_threads(1)
    steps = 30
    train = {"steps": steps, "eval_every": 10, "checkpoint_every": 5, "log_every": 10}
    recipe = toy_tasks.write(tmp_path / f"{kind}.yaml", kind, train=train)
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    assert main(["train", recipe, "--out", str(ref), "--no-progress"]) == 0
    logged = _kill_mid_run(recipe, killed)
    assert 0 < logged < steps
    kept = load_checkpoint(killed)["step"]
    assert logged - kept <= 5  # at most one checkpoint interval lost
    assert main(["train", recipe, "--out", str(killed), "--resume", "--no-progress"]) == 0
    capsys.readouterr()
    a, b = load_checkpoint(ref)["model"], load_checkpoint(killed)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [r["loss"] for r in read_metrics(ref / "metrics.jsonl", "train")]
    assert [r["loss"] for r in read_metrics(killed / "metrics.jsonl", "train")] == losses
    summary = json.loads((killed / "summary.json").read_text())
    reference = json.loads((ref / "summary.json").read_text())
    # The summary covers the whole run, not only the resumed steps.
    for key in ("mean_fwd_nstep", "mean_bwd_nstep", "mean_fwd_residual", "best_step"):
        if key in reference:
            assert summary[key] == pytest.approx(reference[key], rel=1e-9), key
    assert summary["train_seconds"] > 0 and summary["task"] == f"toy_{kind}".replace(
        "chars", "char_lm"
    )
    # The run learned something: the deciding metric improved on the first evaluation.
    metric = summary["best_metric"]
    evals = read_metrics(killed / "metrics.jsonl", "eval")
    assert evals[-1][metric] < evals[0][metric]
    assert summary["mean_fwd_converged"] > 0.5  # a real equilibrium at tol 1e-4

    assert main(["eval", str(killed), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result[metric] == pytest.approx(summary[f"test_{metric}"])
    assert main(["plot", str(killed)]) == 0
    assert (killed / "training.png").read_bytes()[:4] == b"\x89PNG"
    if kind == "regression":  # the task's picture, as a PNG and in TensorBoard
        assert (killed / "pictures" / "fit.png").read_bytes()[:4] == b"\x89PNG"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(ref)).Reload()
    scalars = set(board.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/fwd_nstep", "train/bwd_residual"} <= scalars
    assert {f"test/{metric}", f"test/{metric}"} <= scalars
    if kind == "regression":
        assert "test/fit" in board.Tags()["images"]
