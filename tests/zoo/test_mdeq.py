"""MDEQ zoo model: tuple state, injection, fusion shapes, gradients, toolkit hooks, training."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import parametrize

import deqkit as dk
from deqkit.state import flatten
from deqkit.zoo import build_model, recipe_paths
from deqkit.zoo.mdeq import MDEQCell, MDEQClassifier, MDEQConfig, build

DIGITS_INFO = {"in_channels": 1, "image_size": 16, "num_classes": 10}
QUIET = {"on_failure": "ignore"}


def small(channels=(4, 8), dtype=torch.float32, deq=None, **model):
    torch.manual_seed(0)
    cfg = {"channels": list(channels), "groups": 2, "final_channels": 8, **model}
    budget = {"max_iter": 5, "backward": dk.Implicit(tol=1e-4, max_iter=4)}
    net = build(cfg, {**budget, **QUIET, **(deq or {})}, DIGITS_INFO)
    return net.to(dtype)


def test_tuple_state_round_trips_through_flatten():
    net = small(channels=(4, 8, 8))
    xs = net.injection(torch.randn(3, 1, 16, 16))
    flat, spec = flatten(xs)
    assert flat.shape == (3, 4 * 16 * 16 + 8 * 8 * 8 + 8 * 4 * 4)
    back = spec.unflatten(flat)
    assert isinstance(back, tuple) and len(back) == 3
    for a, b in zip(xs, back, strict=True):
        assert torch.equal(a, b)
    out = net.deq.cell(back, xs)
    assert torch.equal(spec.unflatten(spec.flatten_like(out))[2], out[2])


def test_injection_is_nonzero_only_at_the_highest_resolution():
    net = small(channels=(4, 8, 8))
    xs = net.injection(torch.randn(5, 1, 16, 16))
    assert xs[0].abs().sum() > 0
    assert [tuple(t.shape[1:]) for t in xs] == [(4, 16, 16), (8, 8, 8), (8, 4, 4)]
    assert all(bool((t == 0).all()) for t in xs[1:])


@pytest.mark.parametrize("size", [8, 15])
def test_three_branch_model_runs_end_to_end_on_any_image_size(size):
    net = small(channels=(4, 8, 8))
    logits, sol = net(torch.randn(3, 1, size, size))
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()
    assert [tuple(t.shape[2:]) for t in sol.z] == [
        (size, size),
        ((size + 1) // 2,) * 2,
        (-(-size // 4),) * 2,
    ]


@pytest.mark.parametrize("size", [16, 15])
def test_fusion_maps_every_resolution_to_its_own_shape(size):
    cell = MDEQCell((4, 8, 16), expansion=2, groups=2)
    shapes = [(2, 4, size, size)]
    for c in (8, 16):
        s = (shapes[-1][-1] + 1) // 2
        shapes.append((2, c, s, s))
    z = tuple(torch.randn(s) for s in shapes)
    out = cell(z, tuple(torch.zeros(s) for s in shapes))
    assert [tuple(t.shape) for t in out] == shapes
    # The fused state of every resolution depends on every other resolution.
    for j in range(3):
        moved = list(z)
        moved[j] = torch.randn(shapes[j])
        out2 = cell(tuple(moved), tuple(torch.zeros(s) for s in shapes))
        assert all(not torch.allclose(a, b) for a, b in zip(out, out2, strict=True))


def test_forward_backward_gives_finite_gradients_to_every_parameter():
    net = small(dtype=torch.float64, deq={"backward": dk.Implicit(tol=1e-8, max_iter=8)})
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    logits, sol = net(x)
    assert logits.shape == (4, 10) and isinstance(sol, dk.Solution)
    torch.nn.functional.cross_entropy(logits, torch.arange(4)).backward()
    assert sol.backward is not None and int(sol.backward.nstep.max()) >= 1
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    nonzero = [n for n, p in net.named_parameters() if p.grad.abs().sum() > 0]
    assert len(nonzero) == len(list(net.parameters()))


def test_weight_norm_is_evaluated_once_per_call_and_covers_the_paper_layers():
    net = small()
    cell = net.deq.cell
    normed = [n for n, m in cell.named_modules() if parametrize.is_parametrized(m, "weight")]
    assert sorted(normed) == sorted(
        ["blocks.0.conv1", "blocks.0.conv2", "blocks.1.conv1", "blocks.1.conv2"]
        + ["fusion.post.0.1", "fusion.post.1.1"]
    )
    calls = []
    for name in normed:
        norm = cell.get_submodule(name).parametrizations["weight"][0]
        norm.register_forward_hook(lambda *_, name=name: calls.append(name))
    logits, sol = net(torch.randn(2, 1, 8, 8))
    logits.sum().backward()
    assert int(sol.nstep.max()) > 1
    assert sorted(calls) == sorted(normed)


def test_variational_dropout_mask_is_fixed_within_a_call_and_redrawn_across_calls():
    net = small(dropout=0.3, weight_norm=False)
    drop = net.deq.cell.blocks[0].drop
    assert isinstance(drop, dk.VariationalDropout2d)
    masks = []
    drop.register_forward_hook(lambda m, i, o: masks.append(m._mask))
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        _, sol = net(x)
        first = len(masks)
        net(x)
    assert first == int(sol.nfev) > 1
    assert all(m is masks[0] for m in masks[:first])
    assert not torch.equal(masks[0], masks[first])
    assert isinstance(small(dropout=0.0).deq.cell.blocks[0].drop, torch.nn.Identity)


def test_a_few_training_steps_reduce_the_loss():
    from deqkit.data import load_digits

    images, labels = load_digits().train.batch(torch.arange(32))
    net = small()
    opt = torch.optim.Adam(net.parameters(), lr=2e-2)
    losses = []
    for _ in range(12):
        logits, _ = net(images)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0], losses
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="valid keys"):
        MDEQConfig.from_dict({"chanels": [8, 16]})
    with pytest.raises(ValueError, match="groups=4 must divide"):
        MDEQConfig(channels=(6, 8))
    with pytest.raises(ValueError, match="one entry per branch"):
        MDEQConfig(channels=(8, 16), head_channels=(8,))
    with pytest.raises(ValueError, match="norm"):
        MDEQConfig(norm="layer")
    with pytest.raises(ValueError, match="data_info lacks"):
        build({"name": "mdeq"}, {}, {"image_size": 16})
    assert MDEQConfig(channels=[8, 16]).channels == (8, 16)


def test_every_recipe_validates_and_builds_its_model():
    pytest.importorskip("yaml")

    from deqkit.train.config import deq_kwargs
    from deqkit.train.recipe import load_config

    infos = {
        "digits": {"in_channels": 1, "image_size": 8, "num_classes": 10},
        "mnist": {"in_channels": 1, "image_size": 28, "num_classes": 10},
        "cifar10": {"in_channels": 3, "image_size": 32, "num_classes": 10},
    }
    names = sorted(n for n in recipe_paths() if n.startswith("mdeq-"))
    assert {"mdeq-digits", "mdeq-mnist", "mdeq-cifar10"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert cfg.model["name"] == "mdeq" and "\n" not in cfg.description, name
        net = build_model("mdeq", cfg.model_kwargs(), deq_kwargs(cfg.deq), infos[cfg.data.name])
        assert isinstance(net, MDEQClassifier), name


@pytest.mark.slow
def test_demo_recipe_trains_a_healthy_equilibrium(tmp_path):
    """`make demo`'s recipe end to end (minutes): >= 97% test accuracy and `diagnose` healthy,
    i.e. >= 90% of test samples within tol at the training and eval budgets, the adjoint
    converged at the training settings, and the accuracy unchanged at 4x the eval budget."""
    from deqkit.diagnose import DiagnoseOptions, diagnose_checkpoint
    from deqkit.train import load_config, train

    out = tmp_path / "run"
    summary = train(load_config("mdeq-digits"), out, progress=False)
    assert summary["test_acc"] >= 0.97, summary
    assert summary["mean_fwd_converged"] >= 0.9 and summary["mean_bwd_converged"] >= 0.9
    report = diagnose_checkpoint(out, options=DiagnoseOptions(solvers=("anderson",), max_iter=(8,)))
    assert report["at_train_budget"]["fwd_converged"] >= 0.9, report["at_train_budget"]
    assert report["adjoint"]["converged"] >= 0.9, report["adjoint"]
    assert report["verdict"]["status"] == "healthy", report["verdict"]
