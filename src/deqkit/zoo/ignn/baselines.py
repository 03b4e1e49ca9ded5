"""Explicit baselines on the same graph batches: a 2-layer GCN (torch_geometric) and SGC (K hops).

Both use the batch's already normalised edges (the same A' as IGNN), so they differ from IGNN
only in being explicit: a node sees at most 2 (GCN) or K (SGC) hops.
"""

from __future__ import annotations

import torch
from torch import nn

from deqkit.data.graphs import GraphBatch

from .cell import propagate

__all__ = ["GCN", "SGC", "TASK", "build_gcn", "build_sgc"]

#: The trainer's task for recipes naming these builders (as for IGNN itself).
TASK = "deqkit.zoo.ignn.task:NodeClassification"


def _flat(batch: GraphBatch) -> torch.Tensor:
    b, n, p = batch.x.shape
    return batch.x.reshape(b * n, p)


def _readout(h: torch.Tensor, batch: GraphBatch, head: str) -> torch.Tensor:
    h = h.reshape(batch.batch_size, -1, h.shape[-1])
    if head == "node":
        return h
    mask = batch.mask.unsqueeze(-1).to(h.dtype)
    return (h * mask).sum(1) / mask.sum(1).clamp_min(1.0)


class GCN(nn.Module):
    """Kipf & Welling's 2-layer GCN (``torch_geometric.nn.GCNConv``); returns ``(logits, None)``.

    >>> from deqkit.data.graph_synthetic import chains
    >>> from deqkit.data.graphs import batch_graphs
    >>> logits, sol = GCN(100, 16, 2)(batch_graphs([chains(length=10)]))
    >>> tuple(logits.shape), sol
    ((1, 400, 2), None)
    """

    def __init__(
        self,
        in_features: int,
        hidden: int,
        num_classes: int,
        dropout: float = 0.5,
        head: str = "node",
    ):
        super().__init__()
        from torch_geometric.nn import GCNConv

        self.conv1 = GCNConv(in_features, hidden, normalize=False)
        self.conv2 = GCNConv(hidden, num_classes, normalize=False)
        self.dropout = nn.Dropout(dropout)
        self.head = head

    def forward(self, batch: GraphBatch) -> tuple[torch.Tensor, None]:
        ei, w = batch.edge_index, batch.edge_weight
        h = torch.relu(self.conv1(self.dropout(_flat(batch)), ei, w))
        h = self.conv2(self.dropout(h), ei, w)
        return _readout(h, batch, self.head), None


class SGC(nn.Module):
    """Wu et al.'s simplified graph convolution: logits = (P^K X) Θ; returns ``(logits, None)``.

    >>> from deqkit.data.graph_synthetic import chains
    >>> from deqkit.data.graphs import batch_graphs
    >>> logits, _ = SGC(100, 2, hops=2)(batch_graphs([chains(length=10)]))
    >>> tuple(logits.shape)
    (1, 400, 2)
    """

    def __init__(self, in_features: int, num_classes: int, hops: int = 2, head: str = "node"):
        super().__init__()
        self.hops = hops
        self.linear = nn.Linear(in_features, num_classes)
        self.head = head

    def forward(self, batch: GraphBatch) -> tuple[torch.Tensor, None]:
        h = batch.x
        for _ in range(self.hops):
            h = propagate(batch.operator, h)
        return _readout(self.linear(h), batch, self.head), None


def _build_checked(model_cfg: dict, data_info: dict, valid: tuple[str, ...]) -> dict:
    options = {k: v for k, v in model_cfg.items() if k != "name"}
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown baseline option(s) {unknown}; valid keys: {list(valid)}")
    missing = [k for k in ("num_features", "num_classes") if k not in data_info]
    if missing:
        raise ValueError(f"data_info lacks {missing}; got keys {sorted(data_info)}")
    return options


def build_gcn(model_cfg: dict, deq_options: dict, data_info: dict) -> GCN:
    """Builder for recipes (``model.name: deqkit.zoo.ignn.baselines:build_gcn``); no DEQ.

    >>> build_gcn({"hidden": 8}, {}, {"num_features": 3, "num_classes": 2}).conv1.out_channels
    8
    """
    options = _build_checked(model_cfg, data_info, ("hidden", "dropout", "head"))
    return GCN(
        data_info["num_features"], num_classes=data_info["num_classes"], **{"hidden": 16, **options}
    )


def build_sgc(model_cfg: dict, deq_options: dict, data_info: dict) -> SGC:
    """Builder for recipes (``model.name: deqkit.zoo.ignn.baselines:build_sgc``); no DEQ.

    >>> build_sgc({"hops": 3}, {}, {"num_features": 3, "num_classes": 2}).hops
    3
    """
    options = _build_checked(model_cfg, data_info, ("hops", "head"))
    return SGC(data_info["num_features"], data_info["num_classes"], **options)
