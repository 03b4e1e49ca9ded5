"""The incremental Transformer LM (zoo/irnn/lm.py) and the GunPoint baseline recipe."""

from __future__ import annotations

import json

import pytest
import torch

from deqkit.cli import main
from deqkit.zoo.deq_transformer import build as build_plain
from deqkit.zoo.irnn.lm import IncrementalSequenceBody, build

_CFG = {"d_model": 8, "n_head": 2, "d_inner": 16, "mem_len": 4}
_DEQ = {"solver": "anderson", "tol": 1e-11, "max_iter": 200, "stop_mode": "abs"}


def test_first_layer_is_the_plain_deq_equilibrium_and_later_layers_refine_it():
    torch.manual_seed(0)
    inc = build({**_CFG, "layers": 2}, _DEQ, {"vocab_size": 11}).double()
    torch.manual_seed(0)
    plain = build_plain({"name": "deq_transformer", **_CFG}, _DEQ, {"vocab_size": 11}).double()
    assert isinstance(inc.body, IncrementalSequenceBody)
    n_inc, n_plain = (sum(p.numel() for p in m.parameters()) for m in (inc, plain))
    assert n_inc == n_plain + 1  # alpha
    tokens = torch.randint(0, 11, (2, 6))
    with torch.no_grad():
        z_plain, _, sol_plain = plain.body(plain.embed(tokens))
        body = inc.body
        body.depth = 1
        z_one, _, _ = body(inc.embed(tokens))
        body.depth = 2
        z_two, memory, sol = body(inc.embed(tokens))
    assert bool(sol_plain.converged.all()) and bool(sol.converged.all())
    assert torch.allclose(z_one, z_plain, atol=1e-9)  # alpha = 1, z_prev = 0: the same root
    assert (z_two - z_one).abs().max() > 1e-3  # the second layer moves it
    assert memory.z.shape == (2, 4, 8)
    # The second layer solves alpha (z - z_prev) = f(z + z_prev; us, z0) with z_prev = z_one.
    layer, (first, second) = body.layer, body.solutions
    cell, x = body.cell, inc.embed(tokens)
    with torch.no_grad():
        start = cell.initial_memory(x)
        us = torch.cat([start.u, cell.inject(torch.cat([start.x, x], dim=1))], dim=1)
        extra = cell.extra_inputs(6, start.length + 6, x)
        residual = layer.residual(z_two, z_one, torch.zeros_like(z_two), us, start.z, *extra)
    assert residual.abs().max() < 1e-9
    assert bool((first.nstep > 0).all()) and bool((second.nstep > 0).all())
    assert torch.equal(sol.nstep, first.nstep + second.nstep)
    assert layer.alpha.item() == pytest.approx(1.0)


def test_build_rejects_other_blocks_and_modes():
    with pytest.raises(ValueError, match="block 'transformer', mode 'deq'"):
        build({**_CFG, "mode": "untied"}, {}, {"vocab_size": 5})
    with pytest.raises(ValueError, match="unknown SeqLMConfig option"):
        build({**_CFG, "depth": 3}, {}, {"vocab_size": 5})


def _run(recipe, sets, tmp_path):
    args = ["train", recipe, "--out", str(tmp_path / "run")]
    for item in [*sets, "train.steps=3", "train.eval_every=3"]:
        args += ["--set", item]
    assert main(args) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert any(r.get("step") == 3 for r in records)
    return json.loads((tmp_path / "run" / "summary.json").read_text())


def test_lm_recipe_runs_three_steps_through_the_cli(tmp_path):
    # The recipe's model and solver on a tiny PTB-format character corpus written here.
    lines = [" the cat sat on the mat \n", " a dog ran to the park \n"] * 40
    chars = " ".join("".join(lines).replace(" ", "_"))
    for split in ("train", "valid", "test"):
        (tmp_path / f"ptb.{split}.txt").write_text("".join(lines), encoding="utf-8")
        (tmp_path / f"ptb.char.{split}.txt").write_text(chars, encoding="utf-8")
    sets = [
        "data.corpus=ptb", f"data.root={tmp_path}", "data.seq_len=8", "data.batch_size=4",
        "data.eval_rows=4", "data.eval_batch_size=4", "model.d_model=16", "model.d_inner=32",
        "model.n_head=2", "train.pretrain_steps=2", "train.device=cpu",
    ]  # fmt: skip
    summary = _run("irnn-transformer-wiki-char", sets, tmp_path)
    assert 0 < summary["test_bpc"] < 20 and summary["test_fwd_nstep"] > 0


def test_gunpoint_baseline_recipe_runs_three_steps_through_the_cli(tmp_path):
    sets = ["data.max_train=16", "data.max_test=16", "data.batch_size=8", "model.hidden=8"]
    summary = _run("lstm-gunpoint", sets, tmp_path)
    assert 0.0 <= summary["test_acc"] <= 1.0
