"""Real graphs, offline: Zachary's karate club (bundled with torch_geometric), any networkx graph,
and Planetoid / PPI datasets in their standard on-disk formats read from a local folder.

Planetoid (Cora, CiteSeer, PubMed) is the ``ind.<name>.{x,tx,allx,y,ty,ally,graph,test.index}``
layout of Yang et al. (2016), read with ``torch_geometric.io.read_planetoid_data``. PPI is the
layout torch_geometric's ``PPI`` dataset unpacks: ``{train,valid,test}_graph.json`` (networkx
node-link JSON), ``_feats.npy``, ``_labels.npy`` and ``_graph_id.npy`` per split; every graph
id is one graph (one sample).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .graphs import Graph, normalise_edges, with_spectral_bound

__all__ = ["PLANETOID", "PPI_SPLITS", "from_networkx", "karate_club", "load_planetoid", "load_ppi"]

#: Planetoid dataset names (file prefixes).
PLANETOID = ("cora", "citeseer", "pubmed")
#: PPI split names as the files spell them.
PPI_SPLITS = ("train", "valid", "test")


def karate_club() -> Graph:
    """Zachary's karate club as torch_geometric ships it: 34 nodes, 4 classes, 4 labelled nodes.

    Features are the identity (one-hot node ids); ``masks["train"]`` holds the one labelled node
    per class of Kipf & Welling, ``masks["test"]`` the other 30.

    >>> g = karate_club()
    >>> g.num_nodes, int(g.masks["train"].sum()), int(g.masks["test"].sum()), int(g.y.max()) + 1
    (34, 4, 30, 4)
    """
    from torch_geometric.datasets import KarateClub

    data = KarateClub()[0]
    masks = {"train": data.train_mask.clone(), "test": ~data.train_mask}
    edges = normalise_edges(data.edge_index, data.num_nodes)
    return with_spectral_bound(Graph(data.x.float(), *edges, y=data.y.clone(), masks=masks))


def from_networkx(graph, label_attr: str | None = None, directed: bool | None = None) -> Graph:
    """A networkx graph as a :class:`Graph` with one-hot node-id features.

    Nodes are numbered in ``graph.nodes`` order; an undirected graph gets both edge directions.
    ``label_attr`` names a node attribute turned into class indices (sorted distinct values).

    >>> import networkx as nx
    >>> g = from_networkx(nx.karate_club_graph(), label_attr="club")
    >>> g.num_nodes, int(g.y.max()) + 1, g.num_edges  # 2 * 78 edges + 34 self-loops
    (34, 2, 190)
    """
    nodes = list(graph.nodes)
    where = {v: i for i, v in enumerate(nodes)}
    pairs = [(where[u], where[v]) for u, v in graph.edges]
    edge_index = torch.tensor(pairs, dtype=torch.long).T.reshape(2, -1)
    if not (graph.is_directed() if directed is None else directed):
        edge_index = torch.cat([edge_index, edge_index.flip(0)], 1)
    y = None
    if label_attr is not None:
        values = [graph.nodes[v][label_attr] for v in nodes]
        classes = sorted(set(values))
        y = torch.tensor([classes.index(v) for v in values])
    n = len(nodes)
    return with_spectral_bound(Graph(torch.eye(n), *normalise_edges(edge_index, n), y=y))


def load_planetoid(root: str | Path, name: str) -> Graph:
    """Cora / CiteSeer / PubMed from ``root`` (the folder holding the ``ind.<name>.*`` files).

    The standard split: 20 labelled nodes per class, 500 validation and 1000 test nodes, as the
    files define it. Features are row-normalised (as in GCN and IGNN). (Tested on small files
    written in that format by ``tests/data/test_graphs.py``.)

    >>> load_planetoid("/nonexistent", "cora")
    Traceback (most recent call last):
    ...
    FileNotFoundError: /nonexistent lacks the Planetoid file(s) ['ind.cora.x', 'ind.cora.graph', \
'ind.cora.test.index']
    """
    name = name.lower()
    if name not in PLANETOID:
        raise ValueError(f"unknown Planetoid dataset {name!r}; choose one of {PLANETOID}")
    root = Path(root)
    missing = [
        p.name
        for p in (root / f"ind.{name}.{s}" for s in ("x", "graph", "test.index"))
        if not p.exists()
    ]
    if missing:
        raise FileNotFoundError(f"{root} lacks the Planetoid file(s) {missing}")
    from torch_geometric.io import read_planetoid_data

    data = read_planetoid_data(str(root), name)
    x = data.x.float()
    x = x / x.sum(1, keepdim=True).clamp_min(1e-12)
    masks = {"train": data.train_mask, "val": data.val_mask, "test": data.test_mask}
    edges = normalise_edges(data.edge_index, data.num_nodes)
    return with_spectral_bound(Graph(x, *edges, y=data.y.clone(), masks=masks))


def _ppi_split(root: Path, split: str) -> list[Graph]:
    paths = {k: root / f"{split}_{k}" for k in ("graph.json", "feats.npy", "labels.npy")}
    paths["graph_id.npy"] = root / f"{split}_graph_id.npy"
    missing = [p.name for p in paths.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{root} lacks the PPI file(s) {missing}")
    links = json.loads(paths["graph.json"].read_text())["links"]
    edges = torch.tensor([[e["source"], e["target"]] for e in links], dtype=torch.long).T
    edges = edges.reshape(2, -1)
    feats = torch.from_numpy(np.load(paths["feats.npy"])).float()
    labels = torch.from_numpy(np.load(paths["labels.npy"])).float()
    graph_id = torch.from_numpy(np.load(paths["graph_id.npy"])).long()
    graphs = []
    for gid in graph_id.unique().tolist():
        nodes = torch.nonzero(graph_id == gid)[:, 0]
        local = torch.full((len(graph_id),), -1, dtype=torch.long)
        local[nodes] = torch.arange(len(nodes))
        inside = (local[edges[0]] >= 0) & (local[edges[1]] >= 0)
        ei = local[edges[:, inside]]
        ei = torch.cat([ei, ei.flip(0)], 1).unique(dim=1)  # PPI is undirected
        n = len(nodes)
        g = Graph(feats[nodes], *normalise_edges(ei, n), y=labels[nodes])
        graphs.append(with_spectral_bound(g))
    return graphs


def load_ppi(root: str | Path) -> dict[str, list[Graph]]:
    """The PPI graphs from ``root``: split name ("train", "valid", "test") -> list of graphs,
    each with (n, 121) multi-label node labels (every node is labelled).

    >>> load_ppi("/nonexistent")
    Traceback (most recent call last):
    ...
    FileNotFoundError: PPI folder /nonexistent does not exist
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"PPI folder {root} does not exist")
    return {split: _ppi_split(root, split) for split in PPI_SPLITS}
