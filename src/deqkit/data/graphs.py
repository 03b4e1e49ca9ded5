"""Graphs as samples: one graph, and a batch of disjoint graphs padded to a common node count.

Conventions (the same as torch_geometric's): ``edge_index[0]`` holds sources and ``edge_index[1]``
targets, and messages flow source -> target, so a node aggregates over its in-edges. Edge weights
are stored already normalised (``A' = D^-1/2 (A + I) D^-1/2`` by default, D the in-degree with the
self-loop), per graph, before batching: padding nodes never get a self-loop or any edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = [
    "NORMALISATIONS",
    "Graph",
    "GraphBatch",
    "batch_graphs",
    "graph_operator",
    "normalise_edges",
    "perron_root",
    "with_spectral_bound",
]

#: Edge normalisations accepted by :func:`normalise_edges`.
NORMALISATIONS = ("sym", "sym_undirected", "none")


def _undirected_degree(edge_index: torch.Tensor, weight: torch.Tensor, n: int) -> torch.Tensor:
    """Weighted degree of the undirected skeleton without self-loops (i ~ j counted once)."""
    off = edge_index[0] != edge_index[1]
    i, j = edge_index[:, off]
    w = weight[off]
    lo, hi = torch.minimum(i, j), torch.maximum(i, j)
    keys, inverse = torch.unique(lo * n + hi, return_inverse=True)
    pair_w = torch.zeros(len(keys)).scatter_reduce_(0, inverse, w, "amax", include_self=False)
    degree = torch.zeros(n)
    degree.index_add_(0, keys // n, pair_w)
    degree.index_add_(0, keys % n, pair_w)
    return degree


def normalise_edges(
    edge_index: torch.Tensor,
    num_nodes: int,
    edge_weight: torch.Tensor | None = None,
    normalisation: str = "sym",
    self_loops: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Edges and weights of ``D^-1/2 (A + I) D^-1/2`` or of A + I ("none"); the edge set (and
    so the direction messages flow) is kept as given.

    "sym" takes D from the in-degrees of A + I (GCN's normalisation). "sym_undirected" takes
    D from the undirected skeleton (each neighbour, in or out, counted once, with the larger of
    the two weights), so a node is not favoured for lacking in-edges: on a directed chain
    the first node's self-loop keeps weight 1 under "sym", which makes λ_pf(A') = 1 and caps
    IGNN's gain per hop below 1; under "sym_undirected" λ_pf(A') = 1/2 and the gain can reach 1.

    >>> ei = torch.tensor([[0, 1], [1, 2]])  # the directed chain 0 -> 1 -> 2
    >>> ei2, w = normalise_edges(ei, 3)
    >>> ei2.shape[1], [round(v, 4) for v in w.tolist()]
    (5, [0.7071, 0.5, 1.0, 0.5, 0.5])
    >>> [round(v, 4) for v in normalise_edges(ei, 3, normalisation="sym_undirected")[1].tolist()]
    [0.4082, 0.4082, 0.5, 0.3333, 0.5]
    """
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
    if edge_index.numel() and (edge_index.min() < 0 or edge_index.max() >= num_nodes):
        raise ValueError(f"edge_index refers to nodes outside 0..{num_nodes - 1}")
    weight = torch.ones(edge_index.shape[1]) if edge_weight is None else edge_weight.float()
    skeleton = _undirected_degree(edge_index, weight, num_nodes)
    if self_loops:
        loops = torch.arange(num_nodes).repeat(2, 1)
        edge_index = torch.cat([edge_index, loops], 1)
        weight = torch.cat([weight, torch.ones(num_nodes)])
    if normalisation == "none":
        return edge_index, weight
    # torch_geometric's gcn_norm (tested equal), written out: importing torch_geometric takes
    # seconds, and the data layer only needs these few lines.
    if normalisation == "sym":
        degree = torch.zeros(num_nodes).index_add_(0, edge_index[1], weight)
    else:
        degree = skeleton + (1.0 if self_loops else 0.0)
    scale = degree.pow(-0.5).masked_fill_(degree == 0, 0.0)
    return edge_index, scale[edge_index[0]] * weight * scale[edge_index[1]]


@dataclass
class Graph:
    """One graph: node features, normalised weighted edges, labels and node split masks.

    Args:
        x: (n, p) node features.
        edge_index: (2, E) source/target node indices (normalised, self-loops included).
        edge_weight: (E,) the weights of those edges.
        y: node labels, (n,) class indices or (n, L) multi-label 0/1 floats; or a graph label,
            a 0-d class index (graph classification).
        masks: named (n,) boolean node masks, e.g. "train", "val", "test".
        cache: per-graph derived quantities computed once (e.g. a spectral bound).

    >>> g = Graph(torch.ones(3, 2), *normalise_edges(torch.tensor([[0, 1], [1, 2]]), 3),
    ...           y=torch.tensor([0, 1, 1]))
    >>> g.num_nodes, g.num_edges
    (3, 5)
    """

    x: torch.Tensor
    edge_index: torch.Tensor
    edge_weight: torch.Tensor
    y: torch.Tensor | None = None
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    cache: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.x.dim() != 2:
            raise ValueError(f"Graph.x must be (nodes, features), got {tuple(self.x.shape)}")
        if self.edge_weight.shape != (self.edge_index.shape[1],):
            raise ValueError(
                f"Graph.edge_weight must have one entry per edge ({self.edge_index.shape[1]}), "
                f"got {tuple(self.edge_weight.shape)}"
            )
        for name, mask in self.masks.items():
            if mask.shape != (self.num_nodes,) or mask.dtype != torch.bool:
                raise ValueError(f"Graph.masks[{name!r}] must be a ({self.num_nodes},) bool tensor")

    @property
    def num_nodes(self) -> int:
        """Number of nodes."""
        return self.x.shape[0]

    @property
    def num_edges(self) -> int:
        """Number of stored (normalised) edges, self-loops included."""
        return self.edge_index.shape[1]


@dataclass
class GraphBatch:
    """B disjoint graphs, each one sample: features padded to n nodes, one block-diagonal operator.

    Args:
        x: (B, n, p) features; padding rows are zero.
        operator: sparse (B*n, B*n) aggregation matrix P = A'^T, so ``P @ h`` gives every node
            the weighted sum over its in-neighbours; block b covers rows b*n .. b*n + n - 1.
        edge_index, edge_weight: the same edges in flattened node numbering (for PyG layers).
        mask: (B, n) bool, True on real nodes.
        y: labels stacked per sample (node labels padded), or None.
        masks: node split masks padded with False, (B, n) each.
        spectral: per-graph quantities from ``Graph.cache`` combined by max (e.g. "lambda_pf"),
            present only when every graph in the batch has them.
    """

    x: torch.Tensor
    operator: torch.Tensor
    edge_index: torch.Tensor
    edge_weight: torch.Tensor
    mask: torch.Tensor
    y: torch.Tensor | None
    masks: dict[str, torch.Tensor]
    spectral: dict[str, float]

    @property
    def batch_size(self) -> int:
        """Number of graphs (samples)."""
        return self.x.shape[0]

    def to(self, device: torch.device | str) -> GraphBatch:
        """The batch on ``device``."""
        return GraphBatch(
            self.x.to(device),
            self.operator.to(device),
            self.edge_index.to(device),
            self.edge_weight.to(device),
            self.mask.to(device),
            None if self.y is None else self.y.to(device),
            {k: v.to(device) for k, v in self.masks.items()},
            dict(self.spectral),
        )


def graph_operator(
    edge_index: torch.Tensor,
    edge_weight: torch.Tensor,
    num_nodes: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The sparse aggregation operator P = A'^T: (P h)[j] = sum over edges i -> j of w_ij h[i].

    >>> graph_operator(torch.tensor([[0], [1]]), torch.tensor([2.0]), 2).to_dense().tolist()
    [[0.0, 0.0], [2.0, 0.0]]
    """
    return torch.sparse_coo_tensor(
        edge_index.flip(0), edge_weight, (num_nodes, num_nodes), dtype=dtype, check_invariants=True
    ).coalesce()


def with_spectral_bound(graph: Graph) -> Graph:
    """Store λ_pf(|A'|) of ``graph`` in ``graph.cache["lambda_pf"]`` (once) and return it.

    >>> g = Graph(torch.ones(2, 1), *normalise_edges(torch.tensor([[0, 1], [1, 0]]), 2))
    >>> round(with_spectral_bound(g).cache["lambda_pf"], 5)
    1.0
    """
    if "lambda_pf" not in graph.cache:
        op = graph_operator(graph.edge_index, graph.edge_weight, graph.num_nodes, torch.float64)
        graph.cache["lambda_pf"] = perron_root(op)
    return graph


def _pad(t: torch.Tensor, n: int, value: float = 0) -> torch.Tensor:
    out = t.new_full((n, *t.shape[1:]), value)
    out[: t.shape[0]] = t
    return out


def batch_graphs(graphs: list[Graph], dtype: torch.dtype = torch.float32) -> GraphBatch:
    """Pad B graphs to the largest node count and join their operators block-diagonally.

    >>> chain = torch.tensor([[0, 1], [1, 2]])
    >>> g1 = Graph(torch.ones(3, 2), *normalise_edges(chain, 3))
    >>> g2 = Graph(torch.ones(2, 2), *normalise_edges(chain[:, :1], 2))
    >>> b = batch_graphs([g1, g2])
    >>> tuple(b.x.shape), tuple(b.operator.shape), b.mask.sum(1).tolist()
    ((2, 3, 2), (6, 6), [3, 2])
    """
    if not graphs:
        raise ValueError("batch_graphs needs at least one graph")
    n = max(g.num_nodes for g in graphs)
    x = torch.stack([_pad(g.x.to(dtype), n) for g in graphs])
    mask = torch.stack([_pad(torch.ones(g.num_nodes, dtype=torch.bool), n, False) for g in graphs])
    edge_index = torch.cat([g.edge_index + b * n for b, g in enumerate(graphs)], 1)
    edge_weight = torch.cat([g.edge_weight.to(dtype) for g in graphs])
    operator = graph_operator(edge_index, edge_weight, n * len(graphs), dtype)
    labels = [g.y for g in graphs]
    y = None
    if all(t is not None for t in labels):
        node_level = labels[0].dim() >= 1
        y = torch.stack(
            [_pad(t, n, -1 if t.dim() == 1 else 0) if node_level else t for t in labels]
        )
    names = set.intersection(*(set(g.masks) for g in graphs))
    masks = {k: torch.stack([_pad(g.masks[k], n, False) for g in graphs]) for k in sorted(names)}
    keys = set.intersection(*(set(g.cache) for g in graphs))
    spectral = {k: max(float(g.cache[k]) for g in graphs) for k in sorted(keys)}
    return GraphBatch(x, operator, edge_index, edge_weight, mask, y, masks, spectral)


def _ratios(m: torch.Tensor, v: torch.Tensor) -> tuple[float, float]:
    """Collatz–Wielandt bounds on λ_pf(M) for M ≥ 0: max_i (Mv)_i / v_i over v > 0 bounds it
    from above; min over the support of any v' ≥ 0 from below (M v' ≥ μ v' implies μ ≤ λ_pf).
    The lower bound uses v with its negligible entries cut, so that parts of a reducible matrix
    the Perron vector does not reach (isolated padding nodes, upstream components) drop out."""
    upper = (torch.sparse.mm(m, v[:, None])[:, 0] / v).max()
    cut = torch.where(v > 1e-9 * v.max(), v, torch.zeros_like(v))
    support = cut > 0
    lower = (torch.sparse.mm(m, cut[:, None])[:, 0][support] / cut[support]).min()
    return float(lower), float(upper)


def _strong_blocks(indices: torch.Tensor, n: int) -> torch.Tensor:
    """Which edges stay inside a strongly connected component (scipy's Tarjan)."""
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    row, col = indices.numpy()
    pattern = coo_matrix((np.ones(len(row)), (row, col)), shape=(n, n))
    _, label = connected_components(pattern, directed=True, connection="strong")
    label = torch.from_numpy(label)
    return label[indices[0]] == label[indices[1]]


def perron_root(
    operator: torch.Tensor, tol: float = 1e-6, max_iter: int = 100_000, floor: float = 1e-5
) -> float:
    """Upper bound on λ_pf(|A|) of a sparse matrix within relative ``tol``, by power iteration.

    λ_pf of a reducible matrix is the largest λ_pf of its strongly connected components (the
    Frobenius normal form is block triangular), so edges between components are dropped first:
    what is left is block diagonal with irreducible blocks, on which power iteration of |A| + I
    (aperiodic, same Perron vectors) converges fast, also for long directed chains whose
    transient would otherwise last as long as the chain. It stops when the Collatz–Wielandt lower
    and upper bounds meet and returns the upper one, so the projection radius built from it is
    safe. ``floor`` (as in the reference code) keeps the radius finite for nilpotent graphs
    (directed acyclic, no self-loops), where λ_pf = 0.

    >>> a = torch.tensor([[0.0, 0.5], [0.5, 0.0]]).to_sparse()
    >>> round(perron_root(a), 6)
    0.5
    """
    if operator.layout != torch.sparse_coo or operator.dim() != 2:
        raise TypeError(f"perron_root needs a 2-D sparse COO tensor, got {operator.layout}")
    n = operator.shape[0]
    a = operator.coalesce().to(torch.float64).cpu()
    inside = _strong_blocks(a.indices(), n)
    loops = torch.arange(n).repeat(2, 1)
    indices = torch.cat([a.indices()[:, inside], loops], 1)
    values = torch.cat([a.values()[inside].abs(), torch.ones(n, dtype=a.dtype)])
    m = torch.sparse_coo_tensor(indices, values, (n, n), check_invariants=True).coalesce()
    v = torch.ones(n, dtype=a.dtype)
    hi = float("inf")
    for step in range(max_iter):
        w = torch.sparse.mm(m, v[:, None])[:, 0]
        # A floor keeps v > 0 (the upper bound needs it) without moving the Perron direction.
        v = (w / w.max()).clamp_min(1e-300)
        if step % 10 == 9 or step == max_iter - 1:
            lo, hi = _ratios(m, v)
            lo, hi = lo - 1.0, hi - 1.0
            if hi - lo <= tol * max(hi, floor):
                break
    return max(hi, floor)
