"""Graph data: containers and batching, synthetic generators, karate, Planetoid and PPI files."""

from __future__ import annotations

import json
import pickle

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from deqkit.data import data_source
from deqkit.data.graph_files import from_networkx, karate_club, load_planetoid, load_ppi
from deqkit.data.graph_sets import CHAINS, ChainsOptions
from deqkit.data.graph_synthetic import chain_graphs, chains, communities
from deqkit.data.graphs import Graph, batch_graphs, normalise_edges, perron_root
from deqkit.data.registry import DataContext


def _dense_rho(op: torch.Tensor) -> float:
    return float(torch.linalg.eigvals(op.to_dense().abs().double()).abs().max())


def test_normalisation_is_gcn_norm_on_directed_chain():
    # D^-1/2 (A + I) D^-1/2 with in-degrees 1, 2, 2 of 0 -> 1 -> 2.
    ei, w = normalise_edges(torch.tensor([[0, 1], [1, 2]]), 3)
    dense = torch.zeros(3, 3)
    dense[ei[0], ei[1]] = w
    deg = torch.tensor([1.0, 2.0, 2.0])
    a = torch.tensor([[1.0, 1, 0], [0, 1, 1], [0, 0, 1]])
    expect = a / deg.sqrt()[:, None] / deg.sqrt()[None, :]
    torch.testing.assert_close(dense, expect)


def test_normalisation_equals_torch_geometric_gcn_norm():
    from torch_geometric.nn.conv.gcn_conv import gcn_norm

    gen = torch.Generator().manual_seed(0)
    ei = torch.randint(0, 30, (2, 80), generator=gen)
    ei = ei[:, ei[0] != ei[1]].unique(dim=1)
    w = torch.rand(ei.shape[1], generator=gen)
    ours = normalise_edges(ei, 30, w)
    theirs = gcn_norm(ei, w, 30, add_self_loops=True)
    as_dense = [torch.sparse_coo_tensor(e, v, (30, 30)).to_dense() for e, v in (ours, theirs)]
    torch.testing.assert_close(*as_dense)


def test_bad_edges_are_rejected():
    with pytest.raises(ValueError, match="outside"):
        normalise_edges(torch.tensor([[0], [5]]), 3)
    with pytest.raises(ValueError, match="normalisation"):
        normalise_edges(torch.tensor([[0], [1]]), 3, normalisation="rw")


def test_batch_is_block_diagonal_and_padding_is_isolated():
    g1 = chains(length=5, chains_per_class=1, split=(2, 3, 4))
    g2 = Graph(torch.ones(3, 100), *normalise_edges(torch.tensor([[0, 1], [1, 2]]), 3),
               y=torch.tensor([1, 1, 0]), masks={k: torch.ones(3, dtype=torch.bool)
                                                 for k in ("train", "val", "test")})  # fmt: skip
    b = batch_graphs([g1, g2])
    n = g1.num_nodes
    dense = b.operator.to_dense()
    assert b.x.shape == (2, n, 100)
    assert dense[:n, n:].abs().sum() == 0 and dense[n:, :n].abs().sum() == 0
    # Padding nodes (rows n+3 .. 2n-1) have no edge at all, not even a self-loop.
    assert dense[n + 3 :].abs().sum() == 0 and dense[:, n + 3 :].abs().sum() == 0
    assert b.mask.sum(1).tolist() == [n, 3]
    assert b.y[1, 3:].tolist() == [-1] * (n - 3)
    assert not b.masks["train"][1, 3:].any()
    # P = A'^T: node j aggregates from its in-neighbours.
    assert dense[1, 0] > 0 and dense[0, 1] == 0


def test_perron_root_matches_dense_eigensolver():
    gen = torch.Generator().manual_seed(0)
    graphs = [chains(length=30, chains_per_class=1, split=(2, 2, 2)), karate_club()]
    for directed in (False, True):
        ei = torch.randint(0, 50, (2, 150), generator=gen)
        ei = ei[:, ei[0] != ei[1]]
        if not directed:
            ei = torch.cat([ei, ei.flip(0)], 1)
        graphs.append(Graph(torch.ones(50, 1), *normalise_edges(ei, 50)))
        graphs.append(Graph(torch.ones(50, 1), *normalise_edges(ei, 50, normalisation="none")))
    for g in graphs:
        op = batch_graphs([g], dtype=torch.float64).operator
        lam, rho = perron_root(op), _dense_rho(op)
        assert lam >= rho * (1 - 1e-9)  # an upper bound, so the projection radius is safe
        assert lam == pytest.approx(rho, rel=1e-5)


def test_chains_signal_only_at_chain_start_and_edges_directed():
    g = chains(length=12, chains_per_class=3, split=(10, 20, 30), seed=1)
    heads = torch.arange(6) * 12
    assert g.x.abs().sum() == 6 and (g.x[heads].argmax(1) == g.y[heads]).all()
    assert g.y.tolist() == [0] * 36 + [1] * 36
    off = g.edge_index[0] != g.edge_index[1]
    assert (g.edge_index[1, off] - g.edge_index[0, off] == 1).all()  # i -> i + 1 only
    assert g.cache["lambda_pf"] == pytest.approx(0.5, rel=1e-5)  # "sym_undirected"
    masks = [g.masks[k] for k in ("train", "val", "test")]
    assert [int(m.sum()) for m in masks] == [10, 20, 30]
    assert not (masks[0] & masks[1]).any() and not (masks[1] & masks[2]).any()


def test_chain_split_sizes_and_fixed_val_fraction():
    g = chains(length=10)
    assert [int(g.masks[k].sum()) for k in ("train", "val", "test")] == [20, 100, 200]
    with pytest.raises(ValueError, match="val_fraction"):
        CHAINS.load(ChainsOptions(length=10), DataContext(val_fraction=0.1))


def test_communities_tails_carry_their_community_labels():
    g = communities(num_communities=3, community_size=5, tails_per_community=2, tail_length=4)
    core = 15
    assert g.num_nodes == core + 3 * 2 * 4
    assert g.x[core:].abs().sum() == 0  # tails have no features
    assert g.y.shape == (g.num_nodes, 6) and (g.y.sum(1) >= 1).all()
    # Every tail node has the labels of the community node its tail hangs from.
    src, dst = g.edge_index
    for root, first in zip(src.tolist(), dst.tolist(), strict=True):
        if root < core <= first and (first - core) % 4 == 0:
            assert torch.equal(g.y[first : first + 4], g.y[root].expand(4, -1))


def test_chain_graphs_batch_for_graph_classification():
    graphs = chain_graphs(num_graphs=5, min_length=3, max_length=7, seed=2)
    b = batch_graphs(graphs)
    assert b.y.shape == (5,) and b.x.shape[1] == max(g.num_nodes for g in graphs)
    for g in graphs:
        assert g.x[-1].argmax() == g.y and g.x[:-1].abs().sum() == 0
    assert b.spectral["lambda_pf"] == pytest.approx(1.0, rel=1e-5)


def test_karate_and_networkx():
    g = karate_club()
    assert g.num_nodes == 34 and int(g.masks["train"].sum()) == 4
    assert sorted(g.y[g.masks["train"]].tolist()) == [0, 1, 2, 3]
    h = from_networkx(nx.karate_club_graph(), label_attr="club")
    assert h.num_edges == 2 * 78 + 34 and set(h.y.tolist()) == {0, 1}
    d = from_networkx(nx.DiGraph([(0, 1), (1, 2)]))
    assert d.num_edges == 2 + 3


def _write_planetoid(root, name="cora", n_train=6, n_other=514, n_test=20, p=8, classes=3):
    rng = np.random.default_rng(0)
    n_all = n_train + n_other
    allx = sp.csr_matrix((rng.random((n_all, p)) < 0.3).astype(np.float32))
    tx = sp.csr_matrix((rng.random((n_test, p)) < 0.3).astype(np.float32))
    ally = np.eye(classes)[rng.integers(0, classes, n_all)]
    ty = np.eye(classes)[rng.integers(0, classes, n_test)]
    n = n_all + n_test
    graph = {i: [(i + 1) % n, (i + 7) % n] for i in range(n)}
    test_index = rng.permutation(np.arange(n_all, n))
    files = {"x": allx[:n_train], "y": ally[:n_train], "allx": allx, "ally": ally,
             "tx": tx, "ty": ty, "graph": graph}  # fmt: skip
    for key, value in files.items():
        with open(root / f"ind.{name}.{key}", "wb") as f:
            pickle.dump(value, f)
    (root / f"ind.{name}.test.index").write_text("\n".join(map(str, test_index)) + "\n")
    return allx, tx, ally, ty, test_index


def test_planetoid_files(tmp_path):
    allx, tx, ally, ty, test_index = _write_planetoid(tmp_path)
    g = load_planetoid(tmp_path, "Cora")
    assert g.num_nodes == 540 and g.x.shape[1] == 8
    assert [int(g.masks[k].sum()) for k in ("train", "val", "test")] == [6, 500, 20]
    assert torch.equal(g.y[:520], torch.from_numpy(ally.argmax(1)))
    # Test rows sit at the nodes test.index names.
    assert torch.equal(g.y[torch.from_numpy(test_index)], torch.from_numpy(ty.argmax(1)))
    rows = torch.from_numpy(allx.toarray()[:3])
    torch.testing.assert_close(g.x[:3], rows / rows.sum(1, keepdim=True).clamp_min(1e-12))
    data = data_source("planetoid").load(
        data_source("planetoid").options(dataset="cora"), DataContext(root=tmp_path)
    )
    assert data.info == {"num_features": 8, "num_classes": 3}
    with pytest.raises(FileNotFoundError, match="ind.citeseer.x"):
        load_planetoid(tmp_path, "citeseer")


def _write_ppi(root, graphs_per_split=2, nodes=6, feats=5, labels=4):
    rng = np.random.default_rng(0)
    for split in ("train", "valid", "test"):
        n = graphs_per_split * nodes
        gid = np.repeat(np.arange(graphs_per_split), nodes)
        links = [{"source": g * nodes + i, "target": g * nodes + (i + 1) % nodes}
                 for g in range(graphs_per_split) for i in range(nodes)]  # fmt: skip
        doc = {"directed": False, "multigraph": False, "graph": {},
               "nodes": [{"id": i} for i in range(n)], "links": links}  # fmt: skip
        (root / f"{split}_graph.json").write_text(json.dumps(doc))
        np.save(root / f"{split}_feats.npy", rng.random((n, feats)).astype(np.float32))
        np.save(root / f"{split}_labels.npy", (rng.random((n, labels)) < 0.5).astype(np.float32))
        np.save(root / f"{split}_graph_id.npy", gid)


def test_ppi_files(tmp_path):
    _write_ppi(tmp_path)
    splits = load_ppi(tmp_path)
    assert [len(splits[k]) for k in ("train", "valid", "test")] == [2, 2, 2]
    g = splits["train"][0]
    assert g.num_nodes == 6 and g.y.shape == (6, 4)
    assert g.num_edges == 2 * 6 + 6  # a 6-cycle, both directions, plus self-loops
    data = data_source("ppi").load(data_source("ppi").options(), DataContext(root=tmp_path))
    batch, (y, mask) = data.train.batch(torch.tensor([0, 1]))
    assert batch.batch_size == 2 and y.shape == (2, 6, 4) and bool(mask.all())
    (tmp_path / "test_feats.npy").unlink()
    with pytest.raises(FileNotFoundError, match="test_feats.npy"):
        load_ppi(tmp_path)


def test_registered_sources_load():
    for name in ("chains", "karate", "communities", "chain_graphs"):
        source = data_source(name)
        data = source.load(source.options(), DataContext())
        inputs, targets = data.train.batch(torch.tensor([0]))
        assert inputs.batch_size == 1 and "num_features" in data.info
