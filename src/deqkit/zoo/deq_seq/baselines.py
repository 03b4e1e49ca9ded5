"""Explicit baselines next to the DEQ: an untied stack of the same block, and an LSTM.

(The weight-tied unroll is :class:`~deqkit.zoo.deq_seq.SequenceDEQ` with ``unroll=n``.)
"""

from __future__ import annotations

import torch
from torch import nn

import deqkit as dk

from .seq import Memory, SequenceCell, explicit_record

__all__ = ["LSTMBody", "UntiedStack"]


class UntiedStack(nn.Module):
    """n different cells, each applied once from z = 0 (a Transformer-XL-like deep network).

    Layer k reads its own history: its output on the previous segment (as Transformer-XL caches
    every layer's states); the memory is a tuple of one :class:`Memory` per layer.

    >>> from deqkit.zoo.deq_transformer import DEQTransformerCell
    >>> stack = UntiedStack([DEQTransformerCell(8, 2, 16) for _ in range(2)], mem_len=3)
    >>> z, mem, sol = stack(torch.randn(2, 5, 8))
    >>> z.shape, len(mem), mem[0].z.shape, sol.nfev
    (torch.Size([2, 5, 8]), 2, torch.Size([2, 3, 8]), 2)
    """

    def __init__(self, cells: list[SequenceCell], mem_len: int = 0):
        super().__init__()
        if not cells:
            raise ValueError("UntiedStack needs at least one cell")
        self.layers = nn.ModuleList(cells)
        self.mem_len = max(mem_len, cells[0].min_history)

    @property
    def cell(self) -> SequenceCell:
        """The last layer (the head reads its ``output``)."""
        return self.layers[-1]

    def output(self, z: torch.Tensor) -> torch.Tensor:
        """The last layer's ``output``."""
        return self.cell.output(z)

    def forward(self, x, memory: tuple[Memory, ...] | None = None, z_init=None):
        """Apply every layer once; returns (z, per-layer memories, a Solution record)."""
        if memory is None:
            memory = tuple(layer.initial_memory(x) for layer in self.layers)
        dk.reset_dropout(self)
        z = x.new_zeros(x.shape[0], x.shape[1], self.layers[0].d_state)
        new = []
        with dk.cached_weights(self):
            for layer, mem in zip(self.layers, memory, strict=True):
                u = layer.inject(torch.cat([mem.x, x], dim=1))
                us = torch.cat([mem.u, u], dim=1)
                z = layer(z, us, mem.z, *layer.extra_inputs(x.shape[1], us.shape[1], x))
                new.append(mem.advance(z, u, x, self.mem_len, layer.input_context))
        return z, tuple(new), explicit_record(z, len(self.layers))


class LSTMBody(nn.Module):
    """A multi-layer LSTM over the embeddings; its memory is the (h, c) of the last position.

    >>> body = LSTMBody(4, 6, 1)
    >>> z, mem, sol = body(torch.randn(2, 5, 4))
    >>> z.shape, mem[0].shape
    (torch.Size([2, 5, 6]), torch.Size([1, 2, 6]))
    """

    def __init__(self, d_input: int, d_hidden: int, layers: int = 1, dropout: float = 0.0):
        super().__init__()
        self.lstm = nn.LSTM(d_input, d_hidden, layers, batch_first=True, dropout=dropout)
        self.d_out = d_hidden

    def output(self, z: torch.Tensor) -> torch.Tensor:
        """The hidden states themselves."""
        return z

    def forward(self, x, memory=None, z_init=None):
        """Run the LSTM from the carried state; returns (h, (h_n, c_n) detached, a record)."""
        z, (h, c) = self.lstm(x, memory)
        return z, (h.detach(), c.detach()), explicit_record(z, 1)
