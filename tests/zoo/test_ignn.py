"""IGNN: well-posedness (projection, Perron root), whole-graph fixed points, graphs as samples,
implicit gradients on directed graphs in float64, sparse operators, heads and training."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

import deqkit as dk
from deqkit.data.graph_synthetic import chain_graphs, chains
from deqkit.data.graphs import Graph, batch_graphs, graph_operator, normalise_edges
from deqkit.zoo.ignn import IGNN, IGNNConfig, IGNNLayer, build, project_rows_l1, propagate
from deqkit.zoo.ignn.baselines import GCN, SGC
from deqkit.zoo.ignn.chains import random_start_convergence, train_node_model

F64 = torch.float64


def _chain_graph(n: int, features: int = 3, seed: int = 0) -> Graph:
    gen = torch.Generator().manual_seed(seed)
    edges = torch.stack([torch.arange(n - 1), torch.arange(1, n)])  # directed 0 -> ... -> n-1
    return Graph(torch.randn(n, features, generator=gen, dtype=F64), *normalise_edges(edges, n))


def _random_graph(n: int, e: int, features: int = 3, seed: int = 0) -> Graph:
    gen = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, e), generator=gen)
    ei = ei[:, ei[0] != ei[1]]
    return Graph(torch.randn(n, features, generator=gen, dtype=F64), *normalise_edges(ei, n))


def _layer(p=3, m=4, tol=1e-12, max_iter=500, seed=0, **kw) -> IGNNLayer:
    torch.manual_seed(seed)
    deq = {"solver": "fixed_point", "tol": tol, "max_iter": max_iter, "stop_mode": "abs"}
    deq["backward"] = dk.Implicit(tol=tol, max_iter=max_iter, stop_mode="abs")
    return IGNNLayer(p, m, **kw, **deq).double()


def _project_brute_force(w: np.ndarray, radius: float) -> np.ndarray:
    # min ||a - w||^2 s.t. sum |a| <= r, as a QP in a = p - q, p, q >= 0.
    d = len(w)
    x0 = np.concatenate([np.maximum(w, 0), np.maximum(-w, 0)]) * 0.0

    def obj(x):
        r = x[:d] - x[d:] - w
        return r @ r, np.concatenate([2 * r, -2 * r])

    cons = {"type": "ineq", "fun": lambda x: radius - x.sum(), "jac": lambda x: -np.ones(2 * d)}
    res = minimize(obj, x0, jac=True, bounds=[(0, None)] * (2 * d), constraints=[cons],
                   method="SLSQP", options={"ftol": 1e-14, "maxiter": 500})  # fmt: skip
    return res.x[:d] - res.x[d:]


def test_projection_matches_brute_force_and_keeps_rows_inside():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(12, 5, generator=gen, dtype=F64)
    w[:4] *= 0.05  # rows already inside the ball
    radius = 1.3
    out = project_rows_l1(w, radius)
    assert (out.abs().sum(1) <= radius * (1 + 1e-12)).all()
    inside = w.abs().sum(1) <= radius
    assert inside[:4].all() and torch.equal(out[inside], w[inside])
    for i in range(12):
        expect = _project_brute_force(w[i].numpy(), radius)
        np.testing.assert_allclose(out[i].numpy(), expect, atol=1e-6)
    # float32 rows far outside the ball still land on or inside it (no rounding overshoot).
    big = 100 * torch.randn(16, 16, generator=gen)
    assert (project_rows_l1(big, 0.45).abs().sum(1) <= 0.45).all()
    with pytest.raises(ValueError, match="radius"):
        project_rows_l1(w, 0.0)


@pytest.mark.parametrize("kind", ["chain", "random"])
def test_returned_state_is_fixed_point_of_whole_graph(kind):
    g = _chain_graph(40) if kind == "chain" else _random_graph(60, 200)
    b = batch_graphs([g], dtype=F64)
    layer = _layer(tol=1e-10)
    layer.project_(float(b.spectral.get("lambda_pf", 0)) or dk_perron(b))
    with torch.no_grad():
        z, sol = layer(b.x, b.operator)
        assert sol.converged.all()
        fz = layer.cell(z, layer.injection(b.x, b.operator), b.operator)
    per_node = (fz - z).norm(dim=-1)[0]
    assert per_node.max() <= 1e-10  # every node, including the chain's far end
    assert z[0, -1].abs().sum() > 0 or kind == "random"


def dk_perron(b) -> float:
    from deqkit.data.graphs import perron_root

    return perron_root(b.operator)


def test_sparse_and_dense_adjacency_give_the_same_equilibrium():
    g = _random_graph(30, 90)
    b = batch_graphs([g], dtype=F64)
    layer = _layer()
    layer.project_(dk_perron(b))
    with torch.no_grad():
        z, sol = layer(b.x, b.operator)
        dense = b.operator.to_dense()
        w = layer.cell.weight
        inj = dense @ (b.x[0] @ layer.omega1.weight.T)
        x = torch.zeros_like(inj)
        for _ in range(600):  # plain dense Picard, independent of the solver and of sparsity
            x = torch.relu(dense @ x @ w.T + inj)
    assert sol.converged.all()
    torch.testing.assert_close(z[0], x, rtol=0, atol=1e-10)


def test_batch_of_disjoint_graphs_equals_each_alone():
    g1, g2 = _chain_graph(25, seed=1), _random_graph(12, 40, seed=2)
    layer = _layer(tol=1e-9)
    both = batch_graphs([g1, g2], dtype=F64)
    layer.project_(dk_perron(both))
    with torch.no_grad():
        z, sol = layer(both.x, both.operator)
        alone = [layer(b.x, b.operator) for b in (batch_graphs([g], dtype=F64) for g in (g1, g2))]
    # One sample per graph: each stops on its own residual, at its own step.
    assert sol.converged.shape == (2,) and sol.converged.all()
    for i, (zi, si) in enumerate(alone):
        n = zi.shape[1]
        torch.testing.assert_close(z[i, :n], zi[0], rtol=0, atol=1e-8)
        assert int(sol.nstep[i]) == int(si.nstep[0])
        assert z[i, n:].abs().sum() == 0  # padding stays zero


def test_directed_chain_gradient_matches_finite_differences_and_not_the_reference_bug():
    g = _chain_graph(10)
    b = batch_graphs([g], dtype=F64)
    layer = _layer(tol=1e-13, max_iter=2000)
    layer.project_(dk_perron(b))
    with torch.no_grad():  # a larger W (still well-posed) makes the directed terms matter
        layer.cell.weight.mul_(0.8 / (layer.cell.infinity_norm() * dk_perron(b)))
    c = torch.randn(1, 10, 4, generator=torch.Generator().manual_seed(3), dtype=F64)

    def loss() -> torch.Tensor:
        inj = layer.injection(b.x, b.operator)
        z, _ = layer.deq(inj, b.operator)
        return (z * c).sum(), inj, z

    value, inj, z = loss()
    inj.retain_grad()
    value.backward()
    w = layer.cell.weight
    grad = w.grad.clone()
    fd = torch.zeros_like(w)
    eps = 1e-6
    with torch.no_grad():
        for i in range(w.shape[0]):
            for j in range(w.shape[1]):
                w[i, j] += eps
                up = loss()[0]
                w[i, j] -= 2 * eps
                down = loss()[0]
                w[i, j] += eps
                fd[i, j] = (up - down) / (2 * eps)
    assert (grad - fd).norm() / fd.norm() < 1e-6
    # In the paper's layout X = z^T (m x n), A = P^T, G = dL/dB = inj.grad^T:
    # dL/dW = G (X A)^T = G A^T X^T (correct), the reference code's G A X^T differs here.
    x, a, gmat = z[0].detach().T, b.operator.to_dense().T, inj.grad[0].T
    torch.testing.assert_close(grad, gmat @ a.T @ x.T, rtol=1e-8, atol=1e-10)
    buggy = gmat @ a @ x.T
    assert (buggy - fd).norm() / fd.norm() > 0.05
    # The Omega_1 gradient too.
    om = layer.omega1.weight
    g_om = om.grad.clone()
    with torch.no_grad():
        om[0, 0] += eps
        up = loss()[0]
        om[0, 0] -= 2 * eps
        down = loss()[0]
        om[0, 0] += eps
    assert abs(g_om[0, 0] - (up - down) / (2 * eps)) <= 1e-6 * g_om.abs().max()


def test_large_graph_stays_sparse():
    n, e = 40_000, 100_000
    g = _random_graph(n, e, features=4)
    g.cache["lambda_pf"] = 1.0  # the bound is not under test here; its power iteration is
    b = batch_graphs([g])
    assert b.operator.layout == torch.sparse_coo and b.operator._nnz() <= e + n
    model = IGNN(IGNNConfig(hidden=(8,)), 4, 3, max_iter=3, on_failure="ignore")
    with torch.profiler.profile(profile_memory=True) as prof:
        logits, _ = model(b)
        logits.sum().backward()
    biggest = max(ev.cpu_memory_usage for ev in prof.events())
    assert logits.shape == (1, n, 3)
    assert biggest < 64 * 2**20  # a dense n x n float32 matrix would be 6.4 GB


def test_model_projects_and_stays_well_posed_while_training():
    g = chains(length=10)
    b = batch_graphs([g])
    torch.manual_seed(0)
    model = IGNN(IGNNConfig(hidden=(8,), kappa=0.9), 100, 2, tol=1e-6, max_iter=100,
                 on_failure="ignore")  # fmt: skip
    with torch.no_grad():
        model.layers[0].cell.weight.mul_(50.0)  # far outside the ball
    opt = torch.optim.Adam(model.parameters(), lr=0.5)
    model.projection_hook(opt)
    for _ in range(3):
        logits, sol = model(b)
        assert model.wellposedness() <= 0.9 * (1 + 1e-6)
        torch.nn.functional.cross_entropy(
            logits[b.masks["train"]], b.y[b.masks["train"]]
        ).backward()
        opt.step()
        assert model.wellposedness() <= 0.9 * (1 + 1e-6)  # right after the step, too
    assert float(model.lambda_pf) == pytest.approx(g.cache["lambda_pf"])
    assert random_start_convergence(model, b, starts=3) == 1.0


def test_stacked_multilabel_and_graph_head():
    torch.manual_seed(0)
    g = _random_graph(20, 60)
    g.x = g.x.float()
    cfg = IGNNConfig(hidden=(12, 8, 8, 4), skip=True, omega2=True, row_normalise=False)
    model = IGNN(cfg, 3, 5, tol=1e-5, max_iter=100, on_failure="ignore")
    logits, sol = model(batch_graphs([g]))
    assert logits.shape == (1, 20, 5) and len(model.solutions) == 4
    assert sol.converged.all()
    graphs = chain_graphs(num_graphs=3, seed=0)
    gmodel = IGNN(IGNNConfig(head="graph", hidden=(6,)), 8, 2, tol=1e-6, max_iter=100)
    out, sol = gmodel(batch_graphs(graphs))
    assert out.shape == (3, 2) and sol.converged.shape == (3,)


def test_config_and_builder_errors():
    with pytest.raises(ValueError, match="unknown IGNN model option"):
        build({"hiden": [4]}, {}, {"num_features": 3, "num_classes": 2})
    with pytest.raises(ValueError, match="lacks"):
        build({}, {}, {"num_features": 3})
    with pytest.raises(ValueError, match="kappa"):
        IGNNConfig(kappa=1.0)
    with pytest.raises(ValueError, match="head"):
        IGNNConfig(head="edge")
    with pytest.raises(TypeError, match="GraphBatch"):
        IGNN(IGNNConfig(), 3, 2)(torch.zeros(1, 3, 3))


def test_propagate_direction():
    op = graph_operator(torch.tensor([[0], [1]]), torch.tensor([1.0]), 2)
    h = torch.tensor([[[1.0], [0.0]]])
    assert propagate(op, h).tolist() == [[[0.0], [1.0]]]  # 0 -> 1: node 1 receives


def test_short_chains_ignn_learns_and_two_layer_gcn_cannot_reach():
    """IGNN reaches every node of length-10 chains; a 2-hop model is near chance there."""
    g = chains(length=10)
    b = batch_graphs([g], dtype=F64)
    warnings.simplefilter("ignore", dk.DEQWarning)
    torch.manual_seed(0)
    deq = {"solver": "fixed_point", "tol": 1e-10, "max_iter": 300, "on_failure": "ignore",
           "backward": dk.Implicit(tol=1e-10, max_iter=300)}  # fmt: skip
    ignn = IGNN(IGNNConfig(hidden=(16,)), 100, 2, **deq).double()
    res = train_node_model(ignn, b, b.y, b.masks, epochs=30)
    assert res["test_acc"] >= 0.95 and res["converged"] == 1.0
    torch.manual_seed(0)
    sgc = train_node_model(SGC(100, 2, hops=2).double(), b, b.y, b.masks, epochs=30)
    torch.manual_seed(0)
    gcn = train_node_model(GCN(100, 16, 2).double(), b, b.y, b.masks, epochs=30)
    # A node more than 2 hops from its chain's start sees only zeros: at best 3 of 10 right.
    assert sgc["test_acc"] <= 0.70 and gcn["test_acc"] <= 0.70


RECIPES = {  # recipe -> overrides that shrink it to seconds (same code path)
    "ignn-chains": ["data.length=10", "deq.max_iter=100"],
    "gcn-chains": ["data.length=10"],
    "ignn-karate": [],
    "gcn-karate": [],
    "gcn-multilabel": [],
    "ignn-multilabel": ["model.hidden=[8,4]"],
    "ignn-graphs": ["model.hidden=[4]", "data.train_graphs=20", "data.test_graphs=10"],
    "ignn-ppi": ["model.hidden=[8,4]", "data.batch_size=1"],
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_each_recipe_runs_three_steps_through_the_cli(recipe, tmp_path):
    import json

    from deqkit.cli import main

    out = tmp_path / "run"
    sets = ["train.steps=3", "train.eval_every=3", "train.checkpoint_every=3", *RECIPES[recipe]]
    if recipe == "ignn-ppi":
        from tests.data.test_graphs import _write_ppi

        _write_ppi(tmp_path)
        sets.append(f"data.root={tmp_path}")
    args = ["train", recipe, "--out", str(out), "--no-progress"]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_n"] > 0
    if not recipe.startswith("gcn"):
        assert "test_fwd_converged" in summary
    assert main(["eval", str(out)]) == 0
