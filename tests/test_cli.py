"""The ``deqkit`` command, called in-process: train, eval, plot, recipes and its error messages."""

from __future__ import annotations

import json
import os

import pytest
import torch
import yaml

from deqkit.cli import main

TINY = os.path.join(os.path.dirname(__file__), "train")


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(TINY)
    torch.set_num_threads(1)  # tiny convolutions: one thread beats two on a busy machine
    import tiny_model

    return tiny_model.write_recipe(tmp_path / "tiny.yaml")


def test_train_eval_plot(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", tiny, "--out", str(out), "--no-progress", "--set", "train.steps=2"]
    assert main(args + ["--set", "train.checkpoint_every=0"]) == 0
    printed = capsys.readouterr().out
    assert f"run directory: {out}" in printed and '"step": 2' in printed
    assert (out / "checkpoint.pt").is_file()

    assert main(["eval", str(out / "checkpoint.pt"), "--set", "deq.max_iter=3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["max_iter"] == 3 and result["fwd_nstep"] <= 3 and result["n"] == 360
    assert main(["eval", str(out)]) == 0
    assert capsys.readouterr().out.startswith("test acc ")

    assert main(["plot", str(out)]) == 0
    names = sorted(os.path.basename(p) for p in capsys.readouterr().out.split())
    assert names == ["residuals.png", "solver.png", "training.png"]
    for name in names:
        assert (out / name).read_bytes()[:4] == b"\x89PNG"

    # Extending a finished run: resume from step 2 up to 3 on the new 3-step schedule
    # (1 warmup step, then cosine: factor 0.5 at step index 2), not the old one's lr 0.
    assert main(args[:-1] + ["train.steps=3", "--resume"]) == 0
    assert '"step": 3' in capsys.readouterr().out
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-2])
    assert (last["kind"], last["step"]) == ("train", 3)
    assert last["lr"] == pytest.approx(0.5e-2)


def test_recipes_grouped_by_model_with_marks(capsys):
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "mdeq:" in lines
    digits = [line for line in lines if line.strip().startswith("mdeq-digits ")]
    assert len(digits) == 1 and "[" not in digits[0] and "MDEQ" in digits[0]
    cifar = [line for line in lines if line.strip().startswith("mdeq-cifar10 ")]
    assert "local data" in cifar[0]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "optim.lrate=1"], "unknown key 'optim.lrate'; valid optim keys: ["),
        (["--set", "data.name=mnist", "--set", "data.root=/no/such/dir"], "does not exist"),
        (["--set", "deq.solver=newton"], "deq.solver must be one of"),
        (["--set", "optim.lr=inf"], "optim.lr must be a finite number, got inf"),
        (["--set", "optim.lr=nan"], "optim.lr must be a finite number, got nan"),
        (["--set", "model.colour=1"], "model 'tiny_model:build': unknown tiny model option"),
        (["--resume"], "checkpoint.pt does not exist"),
    ],
)
def test_user_errors_are_one_clear_line(tiny, tmp_path, capsys, extra, message):
    code = main(["train", tiny, "--out", str(tmp_path / "r"), "--no-progress", *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("deqkit: error: ") and message in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()  # validated before the run directory is written


def test_programming_errors_keep_their_traceback(tiny, tmp_path, monkeypatch):
    import deqkit.train.loop as loop

    def broken(*args, **kwargs):
        return {}["acc"]

    monkeypatch.setattr(loop, "run_step", broken)
    with pytest.raises(KeyError):
        main(["train", tiny, "--out", str(tmp_path / "r"), "--no-progress"])


def test_run_directory_defects(tiny, tmp_path, capsys):
    afile = tmp_path / "file"
    afile.write_text("x")
    for out, message in ((afile, "is a file"), (afile / "sub", f"lies under the file {afile}")):
        assert main(["train", tiny, "--out", str(out), "--no-progress"]) == 2
        assert message in capsys.readouterr().err
    out = tmp_path / "run"
    args = ["train", tiny, "--out", str(out), "--no-progress", "--set", "train.steps=2"]
    assert main(args) == 0
    summary = (out / "summary.json").read_text()
    capsys.readouterr()
    assert main(args) == 2  # a second run into the same directory is refused
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "--force" in err
    assert main(args + ["--resume"]) == 0  # a finished run resumes as a no-op
    assert "nothing to resume" in capsys.readouterr().out
    assert (out / "summary.json").read_text() == summary
    assert len([r for r in (out / "metrics.jsonl").read_text().splitlines() if "eval" in r]) == 1
    assert main(args + ["--force"]) == 0


def test_eval_refuses_a_validation_split_the_run_never_had(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", tiny, "--out", str(out), "--no-progress", "--set", "train.steps=1"]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--split", "val", "--set", "data.val_fraction=0.1"]) == 2
    assert "trained on" in capsys.readouterr().err
    assert main(["eval", str(out), "--split", "val"]) == 2
    assert "no validation split" in capsys.readouterr().err
    assert main(["bench", str(out), "--max-iter", "4,abc"]) == 2
    assert "--max-iter must be comma-separated integers" in capsys.readouterr().err


def test_unknown_recipe_and_corrupt_checkpoint(tmp_path, capsys):
    assert main(["train", "mdeq-imagenet"]) == 2
    assert "unknown recipe 'mdeq-imagenet'" in capsys.readouterr().err
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"PK\x03\x04 half a zip file")
    assert main(["eval", str(bad)]) == 2
    assert "truncated, corrupt or not a torch checkpoint" in capsys.readouterr().err
    assert main(["plot", str(tmp_path)]) == 2
    assert "has no metrics.jsonl" in capsys.readouterr().err


def test_resume_with_a_different_model_is_a_clear_error(tiny, tmp_path, capsys):
    out = str(tmp_path / "r")
    base = ["train", tiny, "--out", out, "--no-progress", "--set", "train.steps=1"]
    assert main(base) == 0
    capsys.readouterr()
    assert main(base + ["--set", "model.channels=6", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "does not fit the model: shapes differ: inject.weight (4, 1, 3, 3)" in err


def test_a_few_steps_of_the_shipped_digits_recipe(tmp_path, capsys):
    torch.set_num_threads(1)
    out = tmp_path / "mdeq"
    sets = ["train.steps=2", "train.pretrain_steps=1", "train.eval_every=0", "data.batch_size=16"]
    args = ["train", "mdeq-digits", "--out", str(out), "--no-progress"]
    assert main(args + [x for s in sets for x in ("--set", s)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    deq = yaml.safe_load((out / "config.yaml").read_text())["deq"]  # the recipe's budgets
    assert summary["step"] == 2 and 0 < summary["mean_fwd_nstep"] <= deq["max_iter"]
    assert 0.0 <= summary["test_acc"] <= 1.0
    assert 0 < summary["test_fwd_nstep"] <= deq["eval_max_iter"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first, second = [r for r in records if r["kind"] == "train"]
    assert first.get("pretrain") and "bwd_nstep" not in first  # unrolled warm-up step
    assert not second.get("pretrain") and 0 < second["bwd_nstep"]  # solved, implicit backward
    # solver statistics in the summary average over solved steps only, not the unrolled one
    assert summary["mean_fwd_nstep"] == pytest.approx(second["fwd_nstep"])
    assert summary["mean_bwd_nstep"] == pytest.approx(second["bwd_nstep"])


def test_bench_compares_solvers_and_budgets(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    train = ["train", tiny, "--out", str(out), "--no-progress", "--set", "train.steps=2"]
    assert main(train) == 0
    capsys.readouterr()
    args = ["bench", str(out / "checkpoint.pt"), "--solvers", "fixed_point,broyden"]
    assert main(args + ["--max-iter", "2,6", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["solver"], r["max_iter"]) for r in rows] == [
        ("fixed_point", 2),
        ("fixed_point", 6),
        ("broyden", 2),
        ("broyden", 6),
    ]
    for row in rows:
        assert row["fwd_nstep"] <= row["max_iter"] and 0.0 <= row["acc"] <= 1.0
    assert main(args) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["solver", "max_iter", "acc", "fwd", "steps", "converged", "seconds"]
    assert len(table) == 3


def test_other_ranks_print_no_error(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    assert main(["train", tiny, "--out", str(tmp_path / "r"), "--set", "train.stepz=1"]) == 2
    assert capsys.readouterr().err == ""


def test_solver_plot_marks_pretraining_and_tolerance(tmp_path):
    from deqkit.plot import _deq_settings, _phases

    records = [{"step": 1, "pretrain": True}, {"step": 2}, {"step": 3}]
    assert [[r["step"] for r in p] for p in _phases(records)] == [[1], [2, 3]]
    (tmp_path / "config.yaml").write_text("deq: {tol: 0.001, stop_mode: abs}\n")
    assert _deq_settings(tmp_path) == {"tol": 0.001, "stop_mode": "abs"}
