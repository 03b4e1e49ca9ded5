"""Synthetic graphs with long-range dependence: IGNN's chains, a multi-label community graph,
and a set of small chain graphs for graph classification. All generated from a seed, offline.
"""

from __future__ import annotations

import torch

from .graphs import Graph, normalise_edges, with_spectral_bound

__all__ = ["chain_graphs", "chains", "communities", "random_split"]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_split(num_nodes: int, sizes: tuple[int, int, int], seed: int) -> dict[str, torch.Tensor]:
    """Disjoint random train/val/test node masks of the given sizes.

    >>> m = random_split(10, (2, 3, 4), seed=0)
    >>> [int(m[k].sum()) for k in ("train", "val", "test")], bool((m["train"] & m["test"]).any())
    ([2, 3, 4], False)
    """
    if sum(sizes) > num_nodes:
        raise ValueError(f"split sizes {sizes} exceed the {num_nodes} nodes of the graph")
    order = torch.randperm(num_nodes, generator=_generator(seed))
    masks, start = {}, 0
    for name, size in zip(("train", "val", "test"), sizes, strict=True):
        mask = torch.zeros(num_nodes, dtype=torch.bool)
        mask[order[start : start + size]] = True
        masks[name], start = mask, start + size
    return masks


def _chain_edges(start: int, length: int) -> torch.Tensor:
    nodes = torch.arange(start, start + length)
    return torch.stack([nodes[:-1], nodes[1:]])


def chains(
    length: int = 100,
    chains_per_class: int = 20,
    num_classes: int = 2,
    num_features: int = 100,
    split: tuple[int, int, int] = (20, 100, 200),
    seed: int = 0,
    normalisation: str = "sym_undirected",
) -> Graph:
    """The chains benchmark of Gu et al. (2020): disjoint directed chains, label = chain class.

    Each chain is ``0 -> 1 -> ... -> length-1``; only its first node carries the class, as a one
    in feature dimension ``class`` (all other features are zero). Information must therefore
    travel ``length - 1`` hops; a k-layer message-passing net sees only k. Nodes are split at
    random into ``split`` train/val/test nodes (the paper's 20/100/200). ``normalisation`` of
    A + I is "sym_undirected" by default: see :func:`~deqkit.data.graphs.normalise_edges` for
    why "sym" (in-degrees) caps the signal an implicit layer can carry along a directed chain.

    >>> g = chains(length=10)
    >>> g.num_nodes, int(g.x.sum()), [int(g.masks[k].sum()) for k in ("train", "val", "test")]
    (400, 40, [20, 100, 200])
    """
    if length < 2:
        raise ValueError(f"chains need length >= 2, got {length}")
    if num_features < num_classes:
        raise ValueError(f"num_features ({num_features}) must be >= num_classes ({num_classes})")
    count = chains_per_class * num_classes
    n = count * length
    x = torch.zeros(n, num_features)
    y = torch.arange(num_classes).repeat_interleave(chains_per_class).repeat_interleave(length)
    heads = torch.arange(count) * length
    x[heads, y[heads]] = 1.0
    edges = torch.cat([_chain_edges(h, length) for h in heads.tolist()], 1)
    edges, weights = normalise_edges(edges, n, normalisation=normalisation)
    graph = Graph(x, edges, weights, y=y, masks=random_split(n, split, seed))
    return with_spectral_bound(graph)


def communities(
    num_communities: int = 8,
    community_size: int = 10,
    num_labels: int = 6,
    tails_per_community: int = 4,
    tail_length: int = 8,
    num_features: int = 16,
    p_in: float = 0.4,
    p_out: float = 0.01,
    noise: float = 0.3,
    split: tuple[float, float] = (0.5, 0.2),
    seed: int = 0,
) -> Graph:
    """A multi-label stand-in for PPI whose labels depend on nodes many hops away.

    A stochastic block model of ``num_communities`` undirected communities; each community has a
    random 0/1 label vector (every label drawn with probability 1/2, at least one set) shown, with
    Gaussian ``noise``, in the first ``num_labels`` features of its nodes. From random community
    nodes hang ``tails_per_community`` directed tails of ``tail_length`` nodes with zero features
    that carry their community's labels, so a tail node's labels are only visible up to
    ``tail_length`` hops away. ``split`` gives the train and val fractions of all nodes (the rest
    is test).

    >>> g = communities()
    >>> g.num_nodes, tuple(g.y.shape), round(float(g.masks["train"].float().mean()), 1)
    (336, (336, 6), 0.5)
    """
    if num_features < num_labels:
        raise ValueError(f"num_features ({num_features}) must be >= num_labels ({num_labels})")
    gen = _generator(seed)
    labels = (torch.rand(num_communities, num_labels, generator=gen) < 0.5).float()
    labels[labels.sum(1) == 0, 0] = 1.0
    core = num_communities * community_size
    block = torch.arange(core) // community_size
    same = block[:, None] == block[None, :]
    prob = torch.where(same, p_in, p_out)
    upper = torch.triu(torch.rand(core, core, generator=gen) < prob, diagonal=1)
    src, dst = upper.nonzero(as_tuple=True)
    edges = [torch.stack([src, dst]), torch.stack([dst, src])]
    owner = [block]
    start = core
    for c in range(num_communities):
        members = torch.nonzero(block == c)[:, 0]
        roots = members[torch.randint(len(members), (tails_per_community,), generator=gen)]
        for root in roots.tolist():
            edges.append(torch.tensor([[root], [start]]))
            edges.append(_chain_edges(start, tail_length))
            owner.append(torch.full((tail_length,), c))
            start += tail_length
    n = start
    community = torch.cat(owner)
    y = labels[community]
    x = torch.zeros(n, num_features)
    x[:core, :num_labels] = y[:core] + noise * torch.randn(core, num_labels, generator=gen)
    n_train, n_val = round(split[0] * n), round(split[1] * n)
    masks = random_split(n, (n_train, n_val, n - n_train - n_val), seed)
    graph = Graph(x, *normalise_edges(torch.cat(edges, 1), n), y=y, masks=masks)
    return with_spectral_bound(graph)


def chain_graphs(
    num_graphs: int = 200,
    min_length: int = 5,
    max_length: int = 30,
    num_classes: int = 2,
    num_features: int = 8,
    seed: int = 0,
) -> list[Graph]:
    """Graph classification: directed chains of random length whose class sits on the LAST node.

    The class is a one in feature dimension ``class`` of the last node only, and the edges run
    from it towards node 0 (``last -> ... -> 1 -> 0``): a pooled readout is informative only as
    far as the label has travelled along the chain.

    >>> gs = chain_graphs(num_graphs=4, seed=1)
    >>> len(gs), gs[0].y.dim(), all(int(g.x.sum()) == 1 for g in gs)
    (4, 0, True)
    """
    gen = _generator(seed)
    graphs = []
    for _ in range(num_graphs):
        n = int(torch.randint(min_length, max_length + 1, (), generator=gen))
        label = int(torch.randint(num_classes, (), generator=gen))
        x = torch.zeros(n, num_features)
        x[n - 1, label] = 1.0
        edges = _chain_edges(0, n).flip(0)  # n-1 -> n-2 -> ... -> 0
        graphs.append(
            with_spectral_bound(Graph(x, *normalise_edges(edges, n), y=torch.tensor(label)))
        )
    return graphs
