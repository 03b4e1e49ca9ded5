"""Graph datasets as :class:`DataSource` entries; one graph is one sample.

Node tasks on one graph (chains, karate, communities, Planetoid) are transductive: the train,
val and test sets are the same single graph with a different node mask; a batch is
``(GraphBatch, (labels, mask))`` with labels (1, n) or (1, n, L) and mask (1, n). Multi-graph
node tasks (PPI) batch several graphs with every real node scored. Graph classification
(chain_graphs) batches are ``(GraphBatch, labels (B,))``. ``info`` has ``num_features``,
``num_classes`` (and ``num_labels`` for multi-label sets).

>>> from deqkit.data.registry import DataContext
>>> data = CHAINS.load(ChainsOptions(length=10), DataContext())
>>> batch, (y, mask) = data.train.batch(torch.tensor([0]))
>>> data.info, tuple(batch.x.shape), int(mask.sum()), round(batch.spectral["lambda_pf"], 4)
({'num_features': 100, 'num_classes': 2}, (1, 400, 100), 20, 0.5)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .graph_files import PLANETOID, karate_club, load_planetoid, load_ppi
from .graph_synthetic import chain_graphs, chains, communities
from .graphs import NORMALISATIONS, Graph, GraphBatch, batch_graphs
from .registry import DataContext, DataSource, DataSplits, NoOptions, split_validation

__all__ = [
    "CHAINS",
    "CHAIN_GRAPHS",
    "COMMUNITIES",
    "KARATE",
    "PLANETOID_SOURCE",
    "PPI",
    "ChainGraphsOptions",
    "ChainsOptions",
    "CommunitiesOptions",
    "GraphSet",
    "NodeSet",
    "PlanetoidOptions",
]


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"data.{name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"data.{name} must be >= 1, got {value!r}")
    return value


class NodeSet:
    """One graph scored on the nodes of one mask (or several graphs, every node scored)."""

    def __init__(self, graphs: list[Graph], mask: str | None):
        self.graphs = graphs
        self.mask = mask
        self._whole = batch_graphs(graphs) if len(graphs) == 1 else None

    def __len__(self) -> int:
        return len(self.graphs)

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None):
        if self._whole is not None:
            if bool((index != 0).any()):
                raise IndexError(f"a one-graph set has only sample 0, got {index.tolist()}")
            b = self._whole
        else:
            b = batch_graphs([self.graphs[i] for i in index.tolist()])
        mask = b.mask if self.mask is None else b.masks[self.mask]
        return b, (b.y, mask)


class GraphSet:
    """Graphs with graph labels, batched as padded block-diagonal :class:`GraphBatch` es."""

    def __init__(self, graphs: list[Graph]):
        self.graphs = graphs

    def __len__(self) -> int:
        return len(self.graphs)

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None):
        b: GraphBatch = batch_graphs([self.graphs[i] for i in index.tolist()])
        return b, b.y


def _no_val_fraction(name: str, ctx: DataContext) -> None:
    if ctx.val_fraction > 0:
        raise ValueError(
            f"{name} has a fixed node split; data.val_fraction must be 0, got {ctx.val_fraction}"
        )


def _transductive(graph: Graph, info: dict, val: bool = True) -> DataSplits:
    return DataSplits(
        train=NodeSet([graph], "train"),
        val=NodeSet([graph], "val") if val else None,
        test=NodeSet([graph], "test"),
        info=info,
    )


@dataclass(frozen=True)
class ChainsOptions:
    """Recipe keys of ``chains``: chain ``length``, ``chains_per_class``, ``num_features``,
    the train/val/test node counts, the generator seed ``graph_seed`` and the adjacency
    ``normalisation`` (see :func:`deqkit.data.graphs.normalise_edges`)."""

    length: int = 100
    chains_per_class: int = 20
    num_features: int = 100
    train_nodes: int = 20
    val_nodes: int = 100
    test_nodes: int = 200
    graph_seed: int = 0
    normalisation: str = "sym_undirected"

    def __post_init__(self):
        for name in ("length", "chains_per_class", "num_features", "train_nodes", "val_nodes"):
            _positive_int(name, getattr(self, name))
        _positive_int("test_nodes", self.test_nodes)
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(
                f"data.normalisation must be one of {NORMALISATIONS}, got {self.normalisation!r}"
            )


def _chains(opts: ChainsOptions, ctx: DataContext) -> DataSplits:
    _no_val_fraction("chains", ctx)
    split = (opts.train_nodes, opts.val_nodes, opts.test_nodes)
    g = chains(
        opts.length, opts.chains_per_class, 2, opts.num_features, split, opts.graph_seed,
        normalisation=opts.normalisation,
    )  # fmt: skip
    return _transductive(g, {"num_features": opts.num_features, "num_classes": 2})


def _karate(opts: NoOptions, ctx: DataContext) -> DataSplits:
    _no_val_fraction("karate", ctx)
    g = karate_club()
    return _transductive(g, {"num_features": g.x.shape[1], "num_classes": 4}, val=False)


@dataclass(frozen=True)
class CommunitiesOptions:
    """Recipe keys of ``communities`` (see :func:`deqkit.data.graph_synthetic.communities`)."""

    num_communities: int = 8
    community_size: int = 10
    num_labels: int = 6
    tails_per_community: int = 4
    tail_length: int = 8
    num_features: int = 16
    noise: float = 0.3
    graph_seed: int = 0

    def __post_init__(self):
        for name in ("num_communities", "community_size", "num_labels", "tail_length"):
            _positive_int(name, getattr(self, name))
        _positive_int("num_features", self.num_features)


def _communities(opts: CommunitiesOptions, ctx: DataContext) -> DataSplits:
    _no_val_fraction("communities", ctx)
    g = communities(
        opts.num_communities, opts.community_size, opts.num_labels, opts.tails_per_community,
        opts.tail_length, opts.num_features, noise=opts.noise, seed=opts.graph_seed,
    )  # fmt: skip
    info = {"num_features": opts.num_features, "num_classes": opts.num_labels}
    return _transductive(g, {**info, "num_labels": opts.num_labels})


@dataclass(frozen=True)
class ChainGraphsOptions:
    """Recipe keys of ``chain_graphs``: graph counts and chain lengths, ``graph_seed``."""

    train_graphs: int = 200
    test_graphs: int = 100
    min_length: int = 5
    max_length: int = 30
    num_features: int = 8
    graph_seed: int = 0

    def __post_init__(self):
        for name in ("train_graphs", "test_graphs", "min_length", "max_length", "num_features"):
            _positive_int(name, getattr(self, name))
        if self.min_length > self.max_length:
            raise ValueError(f"data.min_length {self.min_length} > max_length {self.max_length}")


def _chain_graphs(opts: ChainGraphsOptions, ctx: DataContext) -> DataSplits:
    def make(count: int, seed: int) -> list[Graph]:
        return chain_graphs(count, opts.min_length, opts.max_length, 2, opts.num_features, seed)

    train = make(opts.train_graphs, opts.graph_seed)
    test = make(opts.test_graphs, opts.graph_seed + 1)
    val = None
    if ctx.val_fraction > 0:
        val_index, train_index = split_validation(len(train), ctx.val_fraction, ctx.seed)
        val = GraphSet([train[i] for i in val_index.tolist()])
        train = [train[i] for i in train_index.tolist()]
    info = {"num_features": opts.num_features, "num_classes": 2}
    return DataSplits(train=GraphSet(train), val=val, test=GraphSet(test), info=info)


@dataclass(frozen=True)
class PlanetoidOptions:
    """Recipe key of ``planetoid``: ``dataset``, one of cora, citeseer, pubmed."""

    dataset: str = "cora"

    def __post_init__(self):
        if self.dataset.lower() not in PLANETOID:
            raise ValueError(f"data.dataset must be one of {PLANETOID}, got {self.dataset!r}")


def _need_root(name: str, ctx: DataContext):
    if ctx.root is None:
        raise ValueError(f"{name} is read from a local folder: set data.root")
    return ctx.root


def _planetoid(opts: PlanetoidOptions, ctx: DataContext) -> DataSplits:
    _no_val_fraction("planetoid", ctx)
    g = load_planetoid(_need_root("planetoid", ctx), opts.dataset)
    return _transductive(g, {"num_features": g.x.shape[1], "num_classes": int(g.y.max()) + 1})


def _ppi(opts: NoOptions, ctx: DataContext) -> DataSplits:
    _no_val_fraction("ppi", ctx)
    splits = load_ppi(_need_root("ppi", ctx))
    labels = splits["train"][0].y.shape[1]
    info = {"num_features": splits["train"][0].x.shape[1], "num_classes": labels}
    return DataSplits(
        train=NodeSet(splits["train"], None),
        val=NodeSet(splits["valid"], None),
        test=NodeSet(splits["test"], None),
        info={**info, "num_labels": labels},
    )


CHAINS = DataSource(_chains, ChainsOptions, description="IGNN's long directed chains (synthetic)")
KARATE = DataSource(_karate, NoOptions, description="Zachary's karate club, 4 labelled nodes")
COMMUNITIES = DataSource(
    _communities, CommunitiesOptions, description="multi-label SBM with long tails (synthetic)"
)
CHAIN_GRAPHS = DataSource(
    _chain_graphs, ChainGraphsOptions, description="graph classification of chains (synthetic)"
)
PLANETOID_SOURCE = DataSource(
    _planetoid, PlanetoidOptions, needs_root=True, description="Cora/CiteSeer/PubMed files"
)
PPI = DataSource(_ppi, NoOptions, needs_root=True, description="PPI (torch_geometric layout)")
