"""Incremental RNN: exact equilibria, per-step implicit gradients (float64), Euler, baselines."""

from __future__ import annotations

import pytest
import torch

import deqkit as dk
from deqkit.zoo.irnn import (
    BlockClassifier,
    IncrementalResidualBlock,
    IncrementalRNN,
    IncrementalTransformerBlock,
    RecurrentBaseline,
    SequenceNet,
    matched_hidden,
    parameter_count,
)

TIGHT = dict(
    solver="broyden",
    tol=1e-11,
    max_iter=200,
    backward=dk.Implicit(solver="broyden", tol=1e-12, max_iter=300),
)


def _rnn(variant="implicit", seed=0, deq=None, **cell):
    torch.manual_seed(seed)
    cell.setdefault("activation", "tanh")
    cell.setdefault("recurrent", "stable")
    cell.setdefault("alpha", 0.5)
    if variant != "implicit" and deq is None:
        deq = {k: v for k, v in TIGHT.items() if k != "backward"}
    return IncrementalRNN(2, 6, variant=variant, deq=TIGHT if deq is None else deq, **cell).double()


def _x(batch=3, steps=5, seed=1):
    return torch.randn(
        batch, steps, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("recurrent", ["stable", "free"])
def test_root_satisfies_the_defining_equation(activation, recurrent):
    # A free U has no uniqueness guarantee (at init_scale 1 some tanh solves fail: see README);
    # scaled down it is a contraction of g -> h_prev + phi(...)/alpha.
    scale = 1.0 if recurrent == "stable" else 0.3
    rnn = _rnn(activation=activation, recurrent=recurrent, init_scale=scale)
    x = _x()
    with torch.no_grad():
        h, sol = rnn(x)
        U, wx = rnn.cell.recurrent_matrix(), rnn.cell.drive(x)
        h_prev = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], dim=1)
        phi = torch.tanh if activation == "tanh" else torch.relu
        lhs = rnn.cell.alpha * (h - h_prev)
        rhs = phi((h + h_prev) @ U.T + wx)
    assert bool(sol.converged.all())
    assert (lhs - rhs).abs().max().item() < 1e-9
    assert sol.step_nstep.shape == (5,) and sol.nstep.shape == (3,)


def _loss(rnn, x):
    h, _ = rnn(x)
    return (h[:, -1] * torch.linspace(-1, 1, h.shape[-1], dtype=h.dtype)).sum() + h.square().mean()


def _directional_fd(rnn, x, param, direction, eps=1e-6):
    with torch.no_grad():
        param.add_(eps * direction)
        up = _loss(rnn, x)
        param.sub_(2 * eps * direction)
        down = _loss(rnn, x)
        param.add_(eps * direction)
    return (up - down) / (2 * eps)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_per_step_implicit_gradient_matches_finite_differences(activation):
    rnn, x = _rnn(activation=activation), _x()
    cell = rnn.cell
    params = [cell.input.weight, cell.U, cell.M, cell.alpha_raw]
    grads = torch.autograd.grad(_loss(rnn, x), params)
    gen = torch.Generator().manual_seed(0)
    for p, g in zip(params, grads, strict=True):
        for _ in range(3):  # directional derivatives along random directions
            d = torch.randn(p.shape, dtype=p.dtype, generator=gen)
            fd = _directional_fd(rnn, x, p, d)
            assert abs((g * d).sum() - fd) < 1e-6 * (1 + abs(fd)), (p.shape, (g * d).sum(), fd)


def test_implicit_gradient_matches_bptt_through_a_converged_euler_unroll():
    # K small Euler steps from h_{t−1} converge to the root; backprop through all of them is the
    # exact derivative of the (converged) unroll and must equal the per-step IFT gradient.
    root, x = _rnn(seed=3), _x(steps=4)
    euler = _rnn("euler", seed=3, euler_steps=1500, eta=0.1, euler_start="prev")
    euler.cell.alpha_raw.data.copy_(root.cell.alpha_raw.data)
    with torch.no_grad():
        gap = (euler(x)[0] - root(x)[0]).abs().max().item()
    assert gap < 1e-10
    shared = ["input.weight", "input.bias", "U", "M", "alpha_raw"]
    g_root = torch.autograd.grad(
        _loss(root, x), [dict(root.cell.named_parameters())[n] for n in shared]
    )
    g_bptt = torch.autograd.grad(
        _loss(euler, x), [dict(euler.cell.named_parameters())[n] for n in shared]
    )
    for name, a, b in zip(shared, g_root, g_bptt, strict=True):
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-9), (name, (a - b).abs().max())


def test_euler_approaches_the_root_as_k_grows():
    root, x = _rnn(seed=4), _x(steps=6)
    with torch.no_grad():
        target = root(x)[0]
        gaps = []
        for k in (5, 50, 500):
            euler = _rnn("euler", seed=4, euler_steps=k, eta=0.1, euler_start="prev")
            gaps.append((euler(x)[0] - target).abs().max().item())
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-8, gaps


def test_phantom_gradient_approaches_implicit_with_more_steps():
    x = _x()
    ref = _rnn()
    grads = torch.autograd.grad(_loss(ref, x), list(ref.parameters()), allow_unused=True)
    implicit = torch.cat(
        [
            (torch.zeros_like(p) if q is None else q).flatten()
            for p, q in zip(ref.parameters(), grads, strict=True)
        ]
    )
    cosines = []
    for steps in (1, 40):
        deq = {k: v for k, v in TIGHT.items() if k != "backward"}
        deq["backward"] = dk.Phantom(steps=steps, damping=0.5)
        rnn = _rnn("phantom", deq=deq)
        grads = torch.autograd.grad(_loss(rnn, x), list(rnn.parameters()), allow_unused=True)
        g = torch.cat(
            [
                (torch.zeros_like(p) if q is None else q).flatten()
                for p, q in zip(rnn.parameters(), grads, strict=True)
            ]
        )
        cosines.append(torch.nn.functional.cosine_similarity(g, implicit, dim=0).item())
    assert cosines[1] > 0.999 and cosines[1] > cosines[0], cosines


def test_step_jacobian_closed_form_matches_autograd_through_the_solve():
    rnn = _rnn(activation="tanh")
    cell = rnn.cell
    h_prev = torch.randn(1, 6, dtype=torch.float64)
    wx = torch.randn(1, 6, dtype=torch.float64)
    U = cell.recurrent_matrix().detach()

    def step(hp):
        return rnn._root(hp, wx, U)[0]

    auto = torch.autograd.functional.jacobian(step, h_prev)[0, :, 0, :]
    closed = cell.step_jacobian(step(h_prev).detach(), h_prev, wx, U)[0]
    assert torch.allclose(auto, closed, atol=1e-8)


def test_step_jacobian_tends_to_minus_identity_as_alpha_shrinks():
    # Eigenvalues of ∂h_t/∂h_{t−1} are (α + λ)/(α − λ) for the eigenvalues λ of DU: they approach
    # −1 as α shrinks. Small α makes the root harder to find (tanh saturates on the way), so
    # Newton-Krylov solves these; Broyden and Anderson stall below α ≈ 0.1 (see README).
    deq = dict(solver=dk.NewtonKrylov(line_search=True), tol=1e-10, max_iter=100)
    distances, radii = [], []
    for alpha in (1.0, 0.3, 0.1):
        rnn = _rnn(activation="tanh", alpha=alpha, deq=deq)
        x = _x(steps=3)
        with torch.no_grad():
            h, sol = rnn(x)
            J = rnn.cell.step_jacobian(
                h[:, 2], h[:, 1], rnn.cell.drive(x)[:, 2], rnn.cell.recurrent_matrix()
            )
        assert bool(sol.converged.all())
        eig = torch.linalg.eigvals(J)
        distances.append((eig + 1).abs().median().item())
        radii.append(eig.abs().max().item())
    assert distances[0] > distances[1] > distances[2] and distances[2] < 0.35, distances
    assert max(radii) < 1.0  # stable U: every eigenvalue inside the unit circle


def test_solution_statistics_include_the_adjoint_solves():
    rnn, x = _rnn(), _x()
    out, sol = SequenceNet(rnn, 3).double()(x)
    assert sol.backward is None
    out.sum().backward()
    assert sol.backward.nstep.shape == (3,) and bool((sol.backward.nstep >= 1).all())


def test_keep_grads_exposes_the_gradient_at_every_step():
    for encoder in (_rnn(), RecurrentBaseline("lstm", 2, 6).double()):
        net = SequenceNet(encoder, 1).double()
        out, _ = net(_x(), keep_grads=True)
        out.sum().backward()
        norms = [h.grad.norm().item() for h in encoder.last_states]
        assert len(norms) == 5 and all(n > 0 for n in norms)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_baselines_match_the_parameter_count(kind):
    torch.manual_seed(0)
    ours = SequenceNet(IncrementalRNN(1, 32, variant="euler"), 10)
    hidden = matched_hidden(kind, parameter_count(ours), 1, 10)
    theirs = SequenceNet(RecurrentBaseline(kind, 1, hidden), 10)
    assert abs(parameter_count(theirs) - parameter_count(ours)) / parameter_count(ours) < 0.05
    x = torch.randn(2, 4, 1)
    fused, _ = theirs.encoder(x)
    stepped, _ = theirs.encoder(x, keep_grads=True)
    assert torch.allclose(fused, stepped, atol=1e-6)


def test_user_errors_name_the_value():
    with pytest.raises(ValueError, match="variant must be one of"):
        IncrementalRNN(1, 4, variant="newton")
    with pytest.raises(ValueError, match="needs a phantom backward"):
        IncrementalRNN(1, 4, variant="phantom", deq={"backward": dk.Implicit()})
    with pytest.raises(ValueError, match="unknown deq options"):
        IncrementalRNN(1, 4, deq={"n_states": 2})
    with pytest.raises(ValueError, match="activation must be one of"):
        IncrementalRNN(1, 4, activation="gelu")
    with pytest.raises(ValueError, match=r"x must be \(B, T, input_size\)"):
        IncrementalRNN(1, 4)(torch.zeros(2, 3))


@pytest.mark.parametrize("kind", ["residual", "transformer"])
def test_incremental_layer_solves_its_equation_and_its_gradient_is_exact(kind):
    torch.manual_seed(0)
    deq = dict(
        solver="anderson",
        tol=1e-11,
        max_iter=200,
        backward=dk.Implicit(tol=1e-12, max_iter=300),
        stop_mode="abs",
    )
    if kind == "residual":
        block, shape = IncrementalResidualBlock(4, deq=deq), (2, 4, 3, 3)
    else:
        block, shape = IncrementalTransformerBlock(4, deq=deq), (2, 3, 4)
    block = block.double()
    gen = torch.Generator().manual_seed(1)
    z_prev = torch.randn(shape, dtype=torch.float64, generator=gen)
    inj = torch.randn(shape, dtype=torch.float64, generator=gen, requires_grad=True)
    z, sol = block(z_prev, inj)
    assert sol.status == dk.Status.CONVERGED
    assert block.residual(z.detach(), z_prev, inj.detach()).abs().max().item() < 1e-9
    weights = torch.randn(shape, dtype=torch.float64, generator=gen)
    (grad,) = torch.autograd.grad((z * weights).sum(), inj)
    d = torch.randn(shape, dtype=torch.float64, generator=gen)
    with torch.no_grad():
        up = (block(z_prev, inj + 1e-6 * d)[0] * weights).sum()
        down = (block(z_prev, inj - 1e-6 * d)[0] * weights).sum()
    assert abs((grad * d).sum() - (up - down) / 2e-6) < 1e-6


@pytest.mark.parametrize("kind", ["residual", "transformer"])
def test_tied_incremental_stack_has_the_parameters_of_its_plain_deq(kind):
    inc = BlockClassifier(kind, "incremental", width=8, depth=3, deq={"max_iter": 3})
    plain = BlockClassifier(kind, "deq", width=8, deq={"max_iter": 3})
    # The stack adds only its learned α.
    assert parameter_count(inc) == parameter_count(plain) + 1
    logits, _ = inc(torch.randn(2, 1, 8, 8))
    assert logits.shape == (2, 10) and len(inc.solutions) == 3
    with pytest.raises(ValueError, match="kind must be"):
        BlockClassifier("mlp")


# Tiny overrides that keep each recipe's model, solver and data kind but cost seconds.
_FAST = {
    "irnn-adding": ["data.length=20", "data.n_train=64", "data.n_test=32"],
    "irnn-root-adding": ["data.length=20", "data.n_train=64", "data.n_test=32"],
    "lstm-adding": ["data.length=20", "data.n_train=64", "data.n_test=32"],
    "irnn-root-digits": ["model.hidden=8", "deq.max_iter=3", "data.eval_batch_size=512"],
    "irnn-root-permuted-digits": ["model.hidden=8", "deq.max_iter=3", "data.eval_batch_size=512"],
    "irnn-block-digits": ["model.width=8", "deq.max_iter=3", "data.eval_batch_size=512"],
    "irnn-root-gunpoint": [
        "model.hidden=8",
        "deq.max_iter=3",
        "data.max_train=16",
        "data.max_test=16",
    ],
}


@pytest.mark.parametrize("recipe", sorted(_FAST))
def test_recipe_runs_three_steps_through_the_cli(recipe, tmp_path):
    import json

    from deqkit.cli import main

    sets = [*_FAST[recipe], "train.steps=3", "train.eval_every=3", "data.batch_size=16"]
    args = ["train", recipe, "--out", str(tmp_path / "run")]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert any(r.get("step") == 3 for r in records)


@pytest.mark.slow
def test_mnist_recipe_trains_a_step_through_the_cli(tmp_path):
    # The recipe's model, solver and 784-step sequences on a 16/8-sample slice and one step: the
    # whole 10k test set took 13+ minutes. One training step still costs ~1.5 min on the loaded
    # CPU: each of the 784 per-step adjoint solves' VJPs is ~30 ms (see README, Not built).
    import json
    import math

    from deqkit.cli import main

    sets = ["train.steps=1", "train.eval_every=1", "data.batch_size=8", "model.hidden=8"]
    sets += ["data.max_train=16", "data.max_test=8", "data.eval_batch_size=8"]
    args = ["train", "irnn-root-mnist", "--out", str(tmp_path / "run")]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    (train,) = [r for r in records if r["kind"] == "train"]
    (test,) = [r for r in records if r["kind"] == "eval" and r.get("split") == "test"]
    assert math.isfinite(train["loss"]) and math.isfinite(train["grad_norm"])
    assert train["fwd_converged"] == 1.0 and train["bwd_residual"] <= 1e-3
    assert test["n"] == 8 and test["fwd_converged"] == 1.0 and 0.0 <= test["acc"] <= 1.0


def test_every_recipe_is_listed_and_builds():
    from deqkit.train.config import deq_kwargs
    from deqkit.train.recipe import load_config
    from deqkit.zoo import build_model, recipe_paths

    names = {n for n in recipe_paths() if n.startswith(("irnn-", "lstm-adding"))}
    names.discard("irnn-transformer-wiki-char")  # an LM (model irnn.lm:build): test_irnn_lm.py
    assert set(_FAST) | {"irnn-root-mnist"} == names
    seq = {"input_size": 1, "num_outputs": 10, "kind": "classification", "num_classes": 10}
    for name in names:
        cfg = load_config(name)
        info = {"image_size": 8, "num_classes": 10} if "block" in name else seq
        net = build_model("irnn", cfg.model_kwargs(), deq_kwargs(cfg.deq), info)
        assert parameter_count(net) > 0


def test_sequence_task_losses_and_metrics():
    from deqkit.zoo.irnn.task import SequenceTask

    copy = SequenceTask({"kind": "per_step", "num_classes": 9})
    logits = torch.zeros(2, 12, 9)
    targets = torch.zeros(2, 12, dtype=torch.long)
    metrics = copy.metrics()
    copy.update(metrics, logits, targets)
    assert abs(metrics["ce"].compute().item() - torch.log(torch.tensor(9.0)).item()) < 1e-5
    assert copy.best.metric == "ce" and copy.best.mode == "min"
    with pytest.raises(ValueError, match="data_info\\['kind'\\]"):
        SequenceTask({"kind": "ranking"})
