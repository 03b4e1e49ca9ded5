"""IGNN models: one or more implicit graph layers, then a node or a graph classification head."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

import deqkit as dk
from deqkit.data.graphs import GraphBatch

from .cell import IGNNLayer
from .wellposed import perron_root

__all__ = ["IGNN", "IGNNConfig", "worst_solution"]

HEADS = ("node", "graph")
POOLS = ("mean", "sum")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class IGNNConfig:
    """Architecture options of :class:`IGNN` (the recipe's ``model`` section).

    Args:
        hidden: state width of each implicit layer, in order (the paper's chains model: [16];
            its PPI model: [4h, 2h, 2h, h] with h = 256).
        kappa: well-posedness margin κ ∈ (0, 1): ‖W‖_∞ ≤ κ / λ_pf(A) for every layer.
        omega2: add the un-aggregated Ω₂ U term to each layer's injection.
        skip: between stacked layers, H_l = ELU(X_l + V_l H_{l-1}) (the paper's PPI model);
            otherwise H_l = X_l.
        dropout: dropout before the head's linear map.
        row_normalise: scale each node's state to unit ℓ2 norm before the head (the paper's
            chains model).
        head: "node" (logits per node) or "graph" (pooled over each graph's nodes).
        pool: graph pooling, "mean" or "sum".
        identity_init: start each W at ``identity_init`` · I plus the usual small uniform noise
            instead of the noise alone (0: off, the paper's init). On a directed chain with the
            "sym_undirected" normalisation, 1.5·I copies a node's state to its successor, so the
            far end of a chain starts with a signal to learn from (see the README).
        dtype: "float32" or "float64" for the parameters and the solve (inputs are cast); long
            directed chains carry signals of relative size ~1e-10 that float32 would lose.

    >>> IGNNConfig(hidden=[8, 4]).hidden
    (8, 4)
    """

    hidden: tuple[int, ...] = (16,)
    kappa: float = 0.9
    omega2: bool = False
    skip: bool = False
    dropout: float = 0.5
    row_normalise: bool = True
    head: str = "node"
    pool: str = "mean"
    identity_init: float = 0.0
    dtype: str = "float32"

    def __post_init__(self):
        hidden = self.hidden
        if not isinstance(hidden, (list, tuple)) or not hidden:
            raise TypeError(f"IGNNConfig.hidden must be a non-empty list of ints, got {hidden!r}")
        if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
            raise ValueError(f"IGNNConfig.hidden must hold positive ints, got {hidden!r}")
        object.__setattr__(self, "hidden", tuple(hidden))
        if isinstance(self.kappa, bool) or not isinstance(self.kappa, (int, float)):
            raise TypeError(f"IGNNConfig.kappa must be a number, got {self.kappa!r}")
        if not 0.0 < self.kappa < 1.0:
            raise ValueError(f"IGNNConfig.kappa must be in (0, 1), got {self.kappa!r}")
        for name in ("omega2", "skip", "row_normalise"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"IGNNConfig.{name} must be a bool, got {getattr(self, name)!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)):
            raise TypeError(f"IGNNConfig.dropout must be a number, got {self.dropout!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"IGNNConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.head not in HEADS:
            raise ValueError(f"IGNNConfig.head must be one of {HEADS}, got {self.head!r}")
        if isinstance(self.identity_init, bool) or not isinstance(self.identity_init, (int, float)):
            raise TypeError(
                f"IGNNConfig.identity_init must be a number, got {self.identity_init!r}"
            )
        if self.dtype not in DTYPES:
            raise ValueError(
                f"IGNNConfig.dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}"
            )
        if self.pool not in POOLS:
            raise ValueError(f"IGNNConfig.pool must be one of {POOLS}, got {self.pool!r}")

    @classmethod
    def from_dict(cls, options: dict) -> IGNNConfig:
        """Build from a recipe's ``model`` section, naming the valid keys on a typo.

        >>> IGNNConfig.from_dict({"kapa": 0.5})
        Traceback (most recent call last):
        ...
        ValueError: unknown IGNN model option(s) ['kapa']; valid keys: ['hidden', 'kappa', \
'omega2', 'skip', 'dropout', 'row_normalise', 'head', 'pool', 'identity_init', 'dtype']
        """
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ValueError(f"unknown IGNN model option(s) {unknown}; valid keys: {valid}")
        return cls(**options)


def worst_solution(solutions: list[dk.Solution]) -> dk.Solution:
    """The layer solution with the fewest converged samples (ties: the largest mean residual).

    A stacked model reports this one, so its convergence rate is a lower bound over its layers.
    """
    return min(solutions, key=lambda s: (int(s.converged.sum()), -float(s.residual.float().mean())))


class IGNN(nn.Module):
    """Implicit graph neural network; ``forward(batch)`` returns ``(logits, solution)``.

    Every graph of a :class:`~deqkit.data.graphs.GraphBatch` is one DEQ sample. In training
    mode (and on the first call) the model records the largest λ_pf(|A|) it has seen
    (``lambda_pf``, from the batch's precomputed ``spectral["lambda_pf"]``, else by power
    iteration) and, before every solve, projects each W onto ‖W‖_∞ ≤ κ / lambda_pf, so every
    solve runs on a well-posed map; :meth:`projection_hook` also projects right after each step
    of an optimiser. ``solutions`` keeps the last forward's per-layer solutions; the returned one
    is :func:`worst_solution` of them.

    Args:
        config: an :class:`IGNNConfig`.
        in_features: node feature width.
        num_classes: classes (or labels, for multi-label tasks).
        **deq_options: keyword arguments of :class:`deqkit.DEQ`, shared by every layer.

    >>> from deqkit.data.graphs import Graph, batch_graphs, normalise_edges
    >>> chain = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
    >>> g = Graph(torch.randn(5, 3), *normalise_edges(chain, 5))
    >>> model = IGNN(IGNNConfig(hidden=[8]), 3, 2, tol=1e-6, max_iter=200)
    >>> logits, sol = model(batch_graphs([g]))
    >>> tuple(logits.shape), sol.status.name, model.wellposedness() <= 0.9 + 1e-6
    ((1, 5, 2), 'CONVERGED', True)
    """

    def __init__(self, config: IGNNConfig, in_features: int, num_classes: int, **deq_options):
        super().__init__()
        self.config = config
        widths = (in_features, *config.hidden)
        self.layers = nn.ModuleList(
            IGNNLayer(widths[i], widths[i + 1], config.kappa, config.omega2, **deq_options)
            for i in range(len(config.hidden))
        )
        self.skips = nn.ModuleList(
            nn.Linear(widths[i], widths[i + 1])
            for i in range(len(config.hidden) if config.skip else 0)
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(widths[-1], num_classes)
        self.register_buffer("lambda_pf", torch.zeros((), dtype=torch.float64))
        self.solutions: list[dk.Solution] = []
        if config.identity_init:
            with torch.no_grad():
                for layer in self.layers:
                    w = layer.cell.weight
                    w.mul_(0.1).add_(config.identity_init * torch.eye(w.shape[0]))
        self.to(DTYPES[config.dtype])

    def graph_bound(self, batch: GraphBatch) -> float:
        """λ_pf(|A|) of the batch: the precomputed per-graph maximum, else by power iteration."""
        if "lambda_pf" in batch.spectral:
            return batch.spectral["lambda_pf"]
        return perron_root(batch.operator)

    @torch.no_grad()
    def project_(self) -> None:
        """Project every layer's W onto the ℓ1-row ball of radius κ / lambda_pf (in place)."""
        lam = float(self.lambda_pf)
        if lam <= 0.0:
            raise RuntimeError("IGNN.project_ before any graph was seen: lambda_pf is unknown")
        for layer in self.layers:
            layer.project_(lam)

    def projection_hook(self, optimizer: torch.optim.Optimizer):
        """Project after every ``optimizer.step()``; returns the hook handle (``.remove()``).

        >>> model = IGNN(IGNNConfig(), 3, 2)
        >>> _ = model.lambda_pf.fill_(2.0)
        >>> opt = torch.optim.SGD(model.parameters(), lr=100.0)
        >>> handle = model.projection_hook(opt)
        >>> for p in model.parameters(): p.grad = torch.ones_like(p)
        >>> opt.step(); model.wellposedness() <= 0.9 + 1e-6
        True
        """
        return optimizer.register_step_post_hook(lambda *_: self.project_())

    def wellposedness(self) -> float:
        """max over layers of ‖W‖_∞ · lambda_pf: below 1 means every seen graph is well-posed."""
        return max(layer.cell.infinity_norm() for layer in self.layers) * float(self.lambda_pf)

    def encode(self, batch: GraphBatch) -> torch.Tensor:
        """Node states (B, n, hidden[-1]) after every implicit layer; fills ``solutions``."""
        if self.training or float(self.lambda_pf) <= 0.0:
            lam = self.graph_bound(batch)
            if lam > float(self.lambda_pf):
                self.lambda_pf.fill_(lam)
        # Idempotent and cheap: whatever changed W since (an optimiser step, a loaded state),
        # the solve below runs on a map that is well-posed on every graph seen in training.
        self.project_()
        dtype = self.head.weight.dtype
        h, operator = batch.x.to(dtype), batch.operator.to(dtype)
        self.solutions = []
        for i, layer in enumerate(self.layers):
            z, sol = layer(h, operator)
            self.solutions.append(sol)
            h = nn.functional.elu(z + self.skips[i](h)) if self.config.skip else z
        return h

    def forward(self, batch: GraphBatch) -> tuple[torch.Tensor, dk.Solution]:
        if not isinstance(batch, GraphBatch):
            raise TypeError(f"IGNN takes a GraphBatch, got {type(batch).__name__}")
        h = self.encode(batch)
        if self.config.row_normalise:
            # eps far below the default 1e-12: far down a chain the states are that small.
            h = nn.functional.normalize(
                h, dim=-1, eps=1e-300 if h.dtype == torch.float64 else 1e-30
            )
        if self.config.head == "graph":
            mask = batch.mask.unsqueeze(-1).to(h.dtype)
            h = (h * mask).sum(1)
            if self.config.pool == "mean":
                h = h / mask.sum(1).clamp_min(1.0)
        return self.head(self.dropout(h)), worst_solution(self.solutions)
