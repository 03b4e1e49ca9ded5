"""Diagnose changes a layer's solver and budgets only through the public ``DEQ.solving_with`` and
``DEQ.budget``: both apply in training and eval mode inside the block, are checked like the
constructor's, and come back afterwards (also after an error); budgets below ``n_states`` and
solvers the backward cannot use are refused before any solve, in one line from the CLI."""

from __future__ import annotations

import pytest
import tiny_model
import torch

import deqkit as dk
from deqkit.cli import main
from deqkit.diagnose import DiagnoseOptions, diagnose
from deqkit.diagnose.measure import layer_settings
from deqkit.train.layers import DEQLayers
from deqkit.train.task import Classification


def _deq(**kw):
    options = {"solver": "fixed_point", "tol": 1e-12, "max_iter": 20, "eval_max_iter": 30}
    return dk.DEQ(lambda z, x: 0.9 * z + x, on_failure="ignore", **{**options, **kw})


def test_budget_with_eval_max_iter_caps_both_modes_and_restores():
    deq = _deq()
    with deq.budget(3, eval_max_iter=5):
        assert deq(torch.ones(2, 1))[1].nstep.tolist() == [3, 3]
        deq.eval()
        assert deq(torch.ones(2, 1))[1].nstep.tolist() == [5, 5]
    assert (deq.max_iter, deq.eval_max_iter) == (20, 30)
    assert deq(torch.ones(2, 1))[1].nstep.tolist() == [30, 30]
    with deq.budget(3):  # eval keeps its own budget
        assert deq(torch.ones(2, 1))[1].nstep.tolist() == [30, 30]
    with pytest.raises(ValueError, match="eval_max_iter must be >= 1"):
        with deq.budget(3, eval_max_iter=0):
            pass
    with pytest.raises(ValueError, match=r"n_states \(2\) must not exceed max_iter \(1\)"):
        with _deq(n_states=2).budget(4, eval_max_iter=1):
            pass


def test_solving_with_swaps_and_restores_after_an_error():
    deq = _deq(solver=dk.Anderson(m=3))
    own = deq.solver
    with pytest.raises(RuntimeError, match="inside"):
        with deq.solving_with("fixed_point"):
            assert deq.solver.name == "fixed_point"
            _, sol = deq(torch.ones(2, 1))
            assert sol.nstep.tolist() == [20, 20]  # contraction 0.9: no early stop at 1e-12
            raise RuntimeError("inside")
    assert deq.solver is own
    shine = dk.DEQ(lambda z, x: 0.5 * z + x, solver="broyden", backward="shine")
    with pytest.raises(ValueError, match="backward 'shine' reads the forward solver's state"):
        with shine.solving_with("anderson"):
            pass
    assert shine.solver.name == "broyden"


def test_layer_settings_keep_the_own_solver_object_and_restore():
    deq = _deq(solver=dk.Anderson(m=3))
    own = deq.solver
    layers = DEQLayers(torch.nn.Sequential(deq))
    with layer_settings(layers, "anderson", 4):
        assert deq.solver is own and (deq.max_iter, deq.eval_max_iter) == (4, 4)
    with layer_settings(layers, "broyden", None):
        assert deq.solver.name == "broyden" and (deq.max_iter, deq.eval_max_iter) == (20, 30)
    assert deq.solver is own and (deq.max_iter, deq.eval_max_iter) == (20, 30)


class Blobs:
    def __len__(self):
        return 8

    def batch(self, index, generator=None):
        return torch.eye(4)[index % 4], index % 4


class Model(torch.nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.deq = dk.DEQ(lambda z, x: 0.5 * torch.tanh(z) + x, tol=1e-4, max_iter=30, **kw)

    def forward(self, x):
        z, sol = self.deq(x)
        return 3 * z, sol


def test_diagnose_refuses_bad_points_before_solving():
    task = Classification({"num_classes": 4})
    with pytest.raises(ValueError, match=r"--max-iter 2 is below the model's deq.n_states=3"):
        diagnose(Model(n_states=3), task, Blobs(), DiagnoseOptions(max_iter=(2, 8)))
    shine = Model(solver="broyden", backward="shine")
    with pytest.raises(ValueError, match=r"--solvers anderson: backward 'shine'"):
        diagnose(shine, task, Blobs(), DiagnoseOptions(solvers=("broyden", "anderson")))


def test_cli_refuses_a_budget_below_n_states_in_one_line(tmp_path, capsys):
    recipe = tiny_model.write_recipe(tmp_path / "tiny.yaml")
    run = tmp_path / "run"
    assert main(["train", recipe, "--out", str(run), "--no-progress", "--set",
                 "deq.n_states=2"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["diagnose", str(run), "--solvers", "anderson", "--max-iter", "1,8"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "deqkit: error: deqkit diagnose: --max-iter 1 is below the model's deq.n_states=2 "
        "(each solve returns that many states); use budgets >= 2"
    ]
    assert not (run / "diagnose.json").exists()
