"""The incremental-equilibrium layer as the body of the sequence-DEQ character LM.

The plain DEQ-Transformer LM (:mod:`deqkit.zoo.deq_transformer`) solves one equilibrium
z = f(z; us, z0) of its cell f (a Transformer-XL block with input injection us and history z0).
Here the same cell is the branch of an :class:`~deqkit.zoo.irnn.blocks.IncrementalBlock`: layer
l's output is the root of

    α(z − z_{l−1}) = f(z + z_{l−1}; us, z0),      z_0 = 0,

solved by a deqkit solver from z_{l−1} with implicit gradients, ``layers`` times with one tied
cell (as the iRNN ties its cell over time). With z_0 = 0 and α = 1 the first layer is exactly
the plain DEQ's equilibrium; the later layers are the incremental refinements. Everything else
(embedding, history padding and memories, head, task) is the deq_seq base, so the model trains
with the ``deq-transformer-wiki-char`` recipe's data and task.

Recipe model name: ``deqkit.zoo.irnn.lm:build`` (options of
:class:`~deqkit.zoo.deq_seq.SeqLMConfig` with ``block: transformer``, ``mode: deq``, plus
``alpha``, the initial α).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

import deqkit as dk
from deqkit.zoo.deq_seq import Memory, SeqLMConfig, SequenceCell, SequenceLM
from deqkit.zoo.deq_seq.seq import combine_solutions

from .blocks import IncrementalBlock

__all__ = ["TASK", "IncrementalSequenceBody", "build", "combine_layers"]

#: The trainer task: the sequence-DEQ LM task with memories across segments.
TASK = "deqkit.zoo.deq_seq.lm_task:SequenceLMTask"


def combine_layers(sols: list[dk.Solution]) -> dk.Solution:
    """One Solution for a stack of solves, per sample: ``nstep`` the sum over the layers (the
    cost of a forward), converged only if every layer converged, the worst residuals and status,
    the mean Jacobian penalty (:func:`~deqkit.zoo.deq_seq.seq.combine_solutions`).

    >>> f = lambda z: 0.5 * z + 1.0
    >>> a = dk.solve(f, torch.zeros(2, 1), "fixed_point", tol=1e-6)
    >>> combine_layers([a, a]).nstep.tolist() == (2 * a.nstep).tolist()
    True
    """
    total = torch.stack([s.nstep for s in sols]).sum(0)
    return dataclasses.replace(combine_solutions(sols), nstep=total)


class IncrementalSequenceBody(nn.Module):
    """``depth`` incremental equilibria of one tied sequence cell over a segment with history.

    The same interface as :class:`~deqkit.zoo.deq_seq.SequenceDEQ`: ``forward(x, memory)`` →
    (z, next memory, solution); the per-layer solutions of the last call are in
    ``self.solutions``.

    >>> from deqkit.zoo.deq_transformer import DEQTransformerCell
    >>> body = IncrementalSequenceBody(DEQTransformerCell(8, 2, 16), 2, mem_len=4, max_iter=30)
    >>> z, mem, sol = body(torch.randn(2, 5, 8))
    >>> z.shape, mem.z.shape, len(body.solutions)
    (torch.Size([2, 5, 8]), torch.Size([2, 4, 8]), 2)
    """

    def __init__(
        self, cell: SequenceCell, depth: int, mem_len: int = 0, alpha: float = 1.0, **deq_options
    ):
        super().__init__()
        if not isinstance(cell, SequenceCell):
            raise TypeError(f"cell must be a SequenceCell, got {type(cell).__name__}")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive int, got {depth!r}")
        self.layer = IncrementalBlock(cell, alpha, deq_options)
        self.depth, self.mem_len = depth, max(mem_len, cell.min_history)
        self.solutions: list[dk.Solution] = []

    @property
    def cell(self) -> SequenceCell:
        """The tied sequence cell (the branch of every layer)."""
        return self.layer.branch

    @property
    def deq(self) -> dk.DEQ:
        """The one ``dk.DEQ`` every layer calls."""
        return self.layer.deq

    def output(self, z: torch.Tensor) -> torch.Tensor:
        """The features the head reads (``cell.output``)."""
        return self.cell.output(z)

    def forward(self, x: torch.Tensor, memory: Memory | None = None, z_init=None):
        """Output of the last layer for segment embeddings x (B, L', E), the next memory and
        the combined solution (:func:`combine_layers`)."""
        if z_init is not None:
            raise ValueError("the incremental body starts its first layer from 0; no z_init")
        cell = self.cell
        memory = cell.initial_memory(x) if memory is None else memory
        if memory.batch_size != x.shape[0]:
            raise ValueError(f"memory has batch size {memory.batch_size} but x has {x.shape[0]}")
        qlen = x.shape[1]
        u = cell.inject(torch.cat([memory.x, x], dim=1))
        us = torch.cat([memory.u, u], dim=1)
        extra = cell.extra_inputs(qlen, memory.length + qlen, x)
        z = x.new_zeros(x.shape[0], qlen, cell.d_state)
        no_injection = torch.zeros_like(z)  # the cell takes its injection through us
        sols = []
        dk.reset_dropout(self)  # one dropout mask for every layer and iteration
        with dk.cached_weights(self):
            for _ in range(self.depth):
                z, sol = self.layer(z, no_injection, us, memory.z, *extra)
                sols.append(sol)
        self.solutions = sols
        new = memory.advance(z, u, x, self.mem_len, cell.input_context)
        return z, new, combine_layers(sols)


def build(model_cfg: dict, deq_options: dict, data_info: dict) -> SequenceLM:
    """The DEQ-Transformer LM with its body replaced by ``layers`` incremental equilibria.

    The embedding, cell and head are built exactly as for ``deq_transformer`` (the same
    initial weights at the same seed); ``alpha`` (default 1) is the one new parameter.

    >>> lm = build({"name": "deqkit.zoo.irnn.lm:build", "d_model": 8, "n_head": 2,
    ...             "d_inner": 16, "layers": 2}, {"max_iter": 5}, {"vocab_size": 20})
    >>> h, mem, sol = lm(torch.randint(0, 20, (2, 6)))
    >>> type(lm.body).__name__, h.shape
    ('IncrementalSequenceBody', torch.Size([2, 6, 8]))
    """
    options = {k: v for k, v in model_cfg.items() if k != "name"}
    alpha = float(options.pop("alpha", 1.0))
    cfg = SeqLMConfig.from_dict(options)
    if cfg.block != "transformer" or cfg.mode != "deq" or cfg.subseq_len:
        raise ValueError(
            "the incremental LM takes block 'transformer', mode 'deq' and no subseq_len; got "
            f"block {cfg.block!r}, mode {cfg.mode!r}, subseq_len {cfg.subseq_len}"
        )
    vocab = data_info.get("vocab_size", data_info.get("input_size"))
    if vocab is None:
        raise ValueError(f"data_info lacks 'vocab_size'; got keys {sorted(data_info)}")
    lm = SequenceLM(cfg, int(vocab), **deq_options)
    cell = lm.body.cell
    lm.body = IncrementalSequenceBody(cell, cfg.layers, cfg.mem_len, alpha, **deq_options)
    return lm
