"""Sequence DEQs: gradients vs finite differences (float64), causality, history padding,
segment recurrence, generation with memories, O(1) training memory, model options."""

from __future__ import annotations

import pytest
import torch

import deqkit as dk
from deqkit.zoo import build_model
from deqkit.zoo.deq_seq import SeqLMConfig, SequenceDEQ, SequenceLM
from deqkit.zoo.deq_seq.generate import generate
from deqkit.zoo.deq_seq.memory import saved_tensor_bytes
from deqkit.zoo.deq_transformer import DEQTransformerCell
from deqkit.zoo.trellisnet import TrellisNetCell

TIGHT = {"solver": "anderson", "tol": 1e-10, "max_iter": 150, "on_failure": "raise"}


def _cells():
    # The reference-code block (z added to the attention output) needs init_std 0.2 and small
    # inputs for a root Anderson finds to 1e-10; the default block works at its defaults.
    return {
        "transformer": lambda: DEQTransformerCell(16, 2, 32),
        "transformer-residual": lambda: DEQTransformerCell(16, 2, 32, init_std=0.2, residual=True),
        "trellisnet": lambda: TrellisNetCell(4, 6, 3, init_std=0.3),
    }


SCALE = {"transformer": 1.0, "transformer-residual": 0.1, "trellisnet": 1.0}
KINDS = ["transformer", "transformer-residual", "trellisnet"]


def _tight_layer(kind, mem_len=3, **extra):
    torch.manual_seed(0)
    cell = _cells()[kind]().double()
    options = {**TIGHT, "backward": dk.Implicit(tol=1e-12, max_iter=150), **extra}
    return SequenceDEQ(cell, mem_len=mem_len, **options)


@pytest.mark.parametrize("kind", KINDS)
def test_implicit_gradient_matches_finite_differences(kind):
    layer = _tight_layer(kind)
    cell = layer.cell
    gen = torch.Generator().manual_seed(1)
    x = SCALE[kind] * torch.randn(2, 5, cell.d_input, dtype=torch.float64, generator=gen)
    readout = torch.randn(2, 5, cell.d_state, dtype=torch.float64, generator=gen)
    memory = layer(x)[1]  # a real (non-zero) history for the second segment
    x2 = SCALE[kind] * torch.randn(2, 5, cell.d_input, dtype=torch.float64, generator=gen)

    def loss():
        z, _, sol = layer(x2, memory)
        assert bool(sol.converged.all())
        return (z * readout).sum()

    weight = dict(cell.named_parameters())
    names = [n for n in weight if n.endswith("original1")][:2]
    assert names, "weight norm should parametrise the cell's layers"
    loss().backward()
    for name in names:
        p = weight[name]
        direction = torch.randn(p.shape, dtype=p.dtype, generator=gen)
        analytic = float((p.grad * direction).sum())
        eps = 1e-5
        with torch.no_grad():
            p.add_(eps * direction)
            up = float(loss())
            p.sub_(2 * eps * direction)
            down = float(loss())
            p.add_(eps * direction)
        numeric = (up - down) / (2 * eps)
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-8), name


@pytest.mark.parametrize("kind", KINDS)
def test_later_tokens_never_change_earlier_equilibria(kind):
    layer = _tight_layer(kind)
    x = SCALE[kind] * torch.randn(2, 6, layer.cell.d_input, dtype=torch.float64)
    z, _, _ = layer(x)
    x_changed = x.clone()
    x_changed[:, 4:] += 5 * SCALE[kind]
    z_changed, _, _ = layer(x_changed)
    assert torch.allclose(z[:, :4], z_changed[:, :4], atol=1e-8)
    assert not torch.allclose(z[:, 4:], z_changed[:, 4:], atol=1e-3)


@pytest.mark.parametrize("kind", ["transformer", "trellisnet"])
def test_history_padding_is_context_not_unknown(kind):
    layer = _tight_layer(kind)
    cell = layer.cell
    x = torch.randn(2, 5, cell.d_input, dtype=torch.float64)
    memory = layer(x)[1]  # a real history: the previous segment's equilibrium
    z0 = memory.z.clone().requires_grad_()
    us = torch.cat([memory.u, cell.inject(torch.cat([memory.x, x], 1))], 1)
    extra = cell.extra_inputs(5, layer.mem_len + 5, x)
    before = z0.detach().clone()
    z, sol = layer.deq(us, z0, *extra, z0=x.new_zeros(2, 5, cell.d_state))
    assert z.shape == (2, 5, cell.d_state)  # the unknown is the segment only
    assert torch.equal(z0.detach(), before)  # the history never moves
    z.sum().backward()
    assert z0.grad is not None and float(z0.grad.abs().sum()) > 0  # but its gradient flows
    # and the fixed point really depends on it
    z_other, _ = layer.deq(us, z0.detach().flip(1), *extra, z0=x.new_zeros(2, 5, cell.d_state))
    assert not torch.allclose(z, z_other, atol=1e-3)


@pytest.mark.parametrize("kind", ["transformer", "trellisnet"])
def test_segment_recurrence_equals_solving_the_concatenation(kind):
    torch.manual_seed(0)
    cfg = SeqLMConfig(
        block=kind, d_model=16, n_head=2, d_inner=32, d_hidden=6, d_out=4, mem_len=12
    )  # fmt: skip
    lm = SequenceLM(cfg, vocab_size=13, **TIGHT).double().eval()
    tokens = torch.randint(0, 13, (2, 12))
    with torch.no_grad():
        whole, _, _ = lm(tokens)
        first, memory, _ = lm(tokens[:, :7])
        second, _, _ = lm(tokens[:, 7:], memory)
    assert torch.allclose(torch.cat([first, second], 1), whole, atol=1e-8)
    loss_whole = lm.loss(whole, tokens)
    loss_split = lm.loss(torch.cat([first, second], 1), tokens)
    assert float(loss_whole) == pytest.approx(float(loss_split), abs=1e-9)


@pytest.mark.parametrize("kind", ["transformer", "trellisnet"])
def test_subsequences_give_the_whole_segment_solve_and_gradient(kind):
    layer = _tight_layer(kind)
    cell = layer.cell
    gen = torch.Generator().manual_seed(2)
    x = SCALE[kind] * torch.randn(2, 7, cell.d_input, dtype=torch.float64, generator=gen)
    memory = layer(x)[1]
    readout = torch.randn(2, 7, cell.d_state, dtype=torch.float64, generator=gen)
    weight = next(p for n, p in cell.named_parameters() if n.endswith("original1"))
    results = []
    for n in (0, 3):  # whole segment; subsequences of 3, 3 and 1
        layer.subseq_len = n
        weight.grad = None
        z, new_memory, sol = layer(x, memory)
        assert bool(sol.converged.all()) and sol.nfev > 0
        (z * readout).sum().backward()
        results.append((z.detach(), new_memory.z, weight.grad.clone(), sol.nfev))
    (z_a, m_a, g_a, _), (z_b, m_b, g_b, _) = results
    assert torch.allclose(z_a, z_b, atol=1e-8) and torch.allclose(m_a, m_b, atol=1e-8)
    assert torch.allclose(g_a, g_b, rtol=1e-6, atol=1e-9)  # the earlier parts stay in the graph


def test_attention_dropout_mask_is_fixed_during_the_solve():
    torch.manual_seed(0)
    cell = DEQTransformerCell(16, 2, 32, attn_dropout=0.3).double()
    layer = SequenceDEQ(cell, mem_len=3, **TIGHT)
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    z_train, _, sol = layer(x)  # a fresh mask per call of f would never reach 1e-10
    assert sol.success
    layer.eval()
    z_eval, _, _ = layer(x)
    assert not torch.allclose(z_train, z_eval, atol=1e-3)
    with pytest.raises(ValueError, match="attn_dropout"):
        SeqLMConfig(attn_dropout=1.0)
    with pytest.raises(ValueError, match="subseq_len"):
        SeqLMConfig(subseq_len=-1)


@pytest.mark.parametrize("kind", ["transformer", "trellisnet"])
def test_generation_with_memories_equals_resolving_the_prefix(kind):
    # Seed 1: with seed 0 one prefix solve of the transformer needs > 150 steps to reach 1e-10.
    torch.manual_seed(1)
    cfg = SeqLMConfig(block=kind, d_model=16, n_head=2, d_inner=32, d_hidden=6, mem_len=40)
    lm = SequenceLM(cfg, vocab_size=11, **TIGHT).double().eval()
    prompt = torch.tensor([[1, 2, 3, 4]])
    fast = generate(lm, prompt, 6, temperature=0.0)
    tokens = prompt
    for _ in range(6):  # greedy decoding by re-solving the whole prefix each time
        with torch.no_grad():
            h, _, _ = lm(tokens)
        tokens = torch.cat([tokens, lm.log_probs(h[:, -1:]).argmax(-1)], 1)
    assert fast.tolist() == tokens.tolist()


def test_training_memory_is_flat_in_iterations_and_linear_in_depth():
    torch.manual_seed(0)
    tokens = torch.randint(0, 17, (4, 16))

    def bytes_of(mode, layers=1, max_iter=10):
        torch.manual_seed(0)
        cfg = SeqLMConfig(mode=mode, layers=layers, d_model=16, n_head=2, d_inner=32, mem_len=8)
        lm = SequenceLM(
            cfg, 17, solver="anderson", max_iter=max_iter, tol=1e-12, on_failure="ignore"
        )
        return saved_tensor_bytes(lambda: lm.loss(lm(tokens)[0], tokens), exclude=lm.parameters())

    deq10, deq40 = bytes_of("deq", max_iter=10), bytes_of("deq", max_iter=40)
    assert deq10 == deq40
    un2, un4, un8 = (bytes_of("unrolled", layers=n) for n in (2, 4, 8))
    assert un8 - un4 == 2 * (un4 - un2) > 0  # linear in depth
    assert deq10 < un4  # one cell evaluation plus the head, less than a 4-layer unroll


def test_dropout_masks_fixed_within_a_solve_and_weight_norm_once():
    torch.manual_seed(0)
    cell = DEQTransformerCell(16, 2, 32, dropout=0.3)
    layer = SequenceDEQ(cell, mem_len=2, solver="anderson", tol=1e-5, max_iter=100)
    calls = []
    wn = cell.qkv.parametrizations.weight[0]
    hook = wn.register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(2, 5, 16)
    z, _, sol = layer.train()(x)
    hook.remove()
    assert bool(sol.converged.all())  # f is one fixed map despite dropout
    assert len(calls) == 1  # the normalised weight is computed once per forward
    z_again, _, _ = layer(x)
    assert not torch.allclose(z, z_again)  # a new mask per forward


def test_model_options_and_baselines_build_and_run():
    tokens = torch.randint(0, 30, (2, 6))
    common = {"d_model": 8, "n_head": 2, "d_inner": 16, "d_hidden": 8, "mem_len": 4}
    for extra in (
        {"adaptive_cutoffs": [5, 15]},
        {"mode": "untied", "layers": 3},
        {"mode": "unrolled", "layers": 3, "pre_ln": True},
        {"block": "trellisnet", "emb_dropout": 0.1, "dropout": 0.1},
        {"attn_dropout": 0.1, "subseq_len": 4},  # segments of 6: parts of 4 and 2
        {"block": "lstm"},
    ):
        lm = build_model(
            "deq_seq",
            {"name": "deq_seq", **common, **extra},
            {"max_iter": 6, "on_failure": "ignore"},
            {"vocab_size": 30},
        )
        h, memory, sol = lm(tokens)
        h2, _, _ = lm(tokens, memory)
        loss = lm.loss(h2, tokens)
        loss.backward()
        logp = lm.log_probs(h2)
        assert torch.allclose(logp.exp().sum(-1), torch.ones(2, 6), atol=1e-5), extra
        assert torch.isfinite(loss), extra
    with pytest.raises(ValueError, match="unknown SeqLMConfig option"):
        SeqLMConfig.from_dict({"heads": 2})
    with pytest.raises(ValueError, match="block must be one of"):
        SeqLMConfig(block="gru")
    with pytest.raises(ValueError, match="n_head=3 must divide d_model=8"):
        DEQTransformerCell(8, 3, 16)


def test_model_names_deq_transformer_and_trellisnet_build_the_deq_seq_models():
    # The two zoo packages are the deq_seq base with their block; old name: deq_seq still builds.
    from deqkit.zoo import model_task, recipe_paths

    tokens = torch.randint(0, 30, (2, 6))
    common = {"d_model": 8, "n_head": 2, "d_inner": 16, "d_hidden": 8, "mem_len": 4}
    loose = {"max_iter": 6, "on_failure": "ignore"}
    for name, block, cell in (("deq_transformer", "transformer", DEQTransformerCell),
                              ("trellisnet", "trellisnet", TrellisNetCell)):  # fmt: skip
        torch.manual_seed(0)
        new = build_model(name, {"name": name, **common}, loose, {"vocab_size": 30})
        torch.manual_seed(0)
        old = build_model(
            "deq_seq", {"name": "deq_seq", "block": block, **common}, loose,
            {"vocab_size": 30},
        )  # fmt: skip
        assert isinstance(new.body.cell, cell) and new.config == old.config
        assert torch.equal(new(tokens)[0], old(tokens)[0])
        assert model_task(name) == model_task("deq_seq")
        with pytest.raises(ValueError, match=f"has block '{block}', got 'lstm'"):
            build_model(name, {"name": name, "block": "lstm"}, {}, {"vocab_size": 30})
    # Each recipe is found once, in the package of its model.
    paths = recipe_paths()
    for recipe in (
        "deq-transformer-wiki-char", "deq-transformer-wiki-char-jr", "deq-transformer-copy",
        "deq-transformer-wt103", "transformer-unrolled-wiki-char", "transformer-untied-wiki-char",
    ):  # fmt: skip
        assert paths[recipe].parent.parent.name == "deq_transformer", recipe
    for recipe in ("trellisnet-wiki-char", "trellisnet-ptb"):
        assert paths[recipe].parent.parent.name == "trellisnet", recipe
    for recipe in ("lstm-wiki-char", "lstm-copy"):
        assert paths[recipe].parent.parent.name == "deq_seq", recipe


_SLOW = pytest.mark.slow  # variants of the three in the default suite; each ~10 s
_RECIPES = [
    "deq-transformer-wiki-char",
    pytest.param("transformer-unrolled-wiki-char", marks=_SLOW),  # mode unrolled: options test
    "trellisnet-wiki-char",
    pytest.param("deq-transformer-wiki-char-jr", marks=_SLOW),
    pytest.param("transformer-untied-wiki-char", marks=_SLOW),
    pytest.param("lstm-wiki-char", marks=_SLOW),
    pytest.param("deq-transformer-wt103", marks=_SLOW),
    pytest.param("trellisnet-ptb", marks=_SLOW),
    "deq-transformer-copy",
    pytest.param("lstm-copy", marks=_SLOW),
]


@pytest.mark.parametrize("recipe", _RECIPES)
def test_recipe_runs_three_steps_through_the_cli(recipe, tmp_path, capsys):
    import json

    from deqkit.cli import main

    # The recipe's model, solver and data kind, on a small PTB-format folder written here.
    lines = [" the cat sat on the mat \n", " a dog ran to the park \n"] * 60
    for split in ("train", "valid", "test"):
        (tmp_path / f"ptb.{split}.txt").write_text("".join(lines), encoding="utf-8")
        chars = "".join(lines).replace(" ", "_")
        (tmp_path / f"ptb.char.{split}.txt").write_text(" ".join(chars), encoding="utf-8")
    sets = [
        "train.steps=3", "train.eval_every=3", "train.device=cpu", "data.corpus=ptb",
        f"data.root={tmp_path}", "data.seq_len=8", "data.batch_size=4", "data.eval_rows=4",
        "data.eval_batch_size=4", "model.d_model=16", "model.d_inner=32", "model.d_hidden=16",
        "model.d_out=8", "model.n_head=2", "train.pretrain_steps=2",
    ]  # fmt: skip
    if "wt103" in recipe:
        sets.append("model.adaptive_cutoffs=[5, 10]")
    if "lstm" in recipe or "unrolled" in recipe or "untied" in recipe:
        sets.remove("train.pretrain_steps=2")
    if "lstm" in recipe:
        sets = [s for s in sets if not s.startswith(("model.d_inner", "model.d_out", "model.n_h"))]
    if "copy" in recipe:  # the synthetic copy task, tiny
        sets = ["train.steps=3", "train.eval_every=3", "train.device=cpu", "data.length=10",
                "data.n_train=32", "data.n_test=16", "data.batch_size=8"]  # fmt: skip
    args = ["train", recipe, "--out", str(tmp_path / "run")]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert any(r.get("step") == 3 for r in records)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    if "copy" in recipe:
        assert 0 <= summary["test_recall"] <= 1
        if recipe == "deq-transformer-copy":  # not a text LM: generate refuses in one line
            assert main(["generate", str(tmp_path / "run"), "--prompt", "a"]) == 2
            assert "not a text language model" in capsys.readouterr().err
        return
    unit = "bpc" if "char" in recipe else "bpw"
    assert 0 < summary[f"test_{unit}"] < 20
    if recipe == "deq-transformer-wiki-char":  # sampling from the trained checkpoint
        capsys.readouterr()
        args = ["generate", str(tmp_path / "run"), "--prompt", "the c", "--n", "7"]
        assert main([*args, "--temperature", "0.5"]) == 0
        text = capsys.readouterr().out.rstrip("\n")
        assert text.startswith("the c") and len(text) == 12
        # User mistakes: one line on stderr, status 2, no traceback.
        for bad, words in [(["--n", "-1"], "--n must be"), (["--temperature", "-1"], "--temp"),
                           (["--prompt", ""], "no char tokens")]:  # fmt: skip
            assert main([*args, *bad]) == 2
            err = capsys.readouterr().err
            assert words in err and "Traceback" not in err and err.count("\n") == 1
        assert main(["generate", str(tmp_path / "none"), "--prompt", "a"]) == 2
        assert "does not exist" in capsys.readouterr().err


def test_guide_creating_a_new_sequence_deq_runs(capsys):
    import re
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "docs" / "sequence_deq.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    assert len(blocks) == 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(doc), "exec"), namespace)
    out = capsys.readouterr().out
    assert "CONVERGED True" in out and "nats" in out
