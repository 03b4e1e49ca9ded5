"""The DEQ-TrellisNet cell (Bai, Kolter, Koltun 2019; TrellisNet of Bai et al., ICLR 2019).

State z = [h, c] per position. f adds a kernel-2 causal convolution of [history h, h] to the
input injection (a kernel-2 causal convolution of the embeddings), splits it into the gates
i, o, g, f and applies LSTM gating with the cell state shifted one step:
c_t = σ(f)·c_{t−1} + σ(i)·tanh(g), h_t = σ(o)·tanh(c_t). The history is the previous segment's
last position of [h, c]; the head reads the last ``d_out`` channels of h.
"""

from __future__ import annotations

import torch
from torch import nn

import deqkit as dk
from deqkit.zoo.deq_seq.seq import SequenceCell

__all__ = ["TrellisNetCell"]


class TrellisNetCell(SequenceCell):
    """Weight-tied TrellisNet layer with LSTM gating; state (B, L', 2·d_hidden) = [h, c].

    Args:
        d_input: embedding width.
        d_hidden: width of h and c.
        d_out: channels of h the head reads (the last ones, as the reference's ``nout``).
        dropout: variational dropout on h before the convolution (one mask per DEQ call).
        init_std: std of the N(0, init_std) initialisation of the convolutions.
        weight_norm: weight-normalise both convolutions (evaluated once per forward).

    >>> cell = TrellisNetCell(4, 6, 3)
    >>> x = torch.randn(2, 1 + 5, 4)            # one embedding of left context + 5 positions
    >>> us = torch.cat([torch.zeros(2, 1, 24), cell.inject(x)], dim=1)
    >>> z = cell(torch.zeros(2, 5, 12), us, torch.zeros(2, 1, 12))
    >>> z.shape, cell.output(z).shape
    (torch.Size([2, 5, 12]), torch.Size([2, 5, 3]))
    """

    input_context = 1
    min_history = 1

    def __init__(
        self,
        d_input: int,
        d_hidden: int,
        d_out: int,
        dropout: float = 0.0,
        init_std: float = 0.05,
        weight_norm: bool = True,
    ):
        super().__init__()
        if not 0 < d_out <= d_hidden:
            raise ValueError(f"d_out must be in 1..d_hidden={d_hidden}, got {d_out}")
        self.d_input, self.d_hidden, self.d_out = d_input, d_hidden, d_out
        self.d_state, self.d_inject = 2 * d_hidden, 4 * d_hidden
        self.inject_conv = nn.Conv1d(d_input, 4 * d_hidden, kernel_size=2)
        self.hidden_conv = nn.Conv1d(d_hidden, 4 * d_hidden, kernel_size=2, bias=False)
        self.drop = dk.VariationalDropout(dropout, shared_dims=(1,))
        for conv in (self.inject_conv, self.hidden_conv):
            nn.init.normal_(conv.weight, 0.0, init_std)
        nn.init.zeros_(self.inject_conv.bias)
        if weight_norm:
            dk.apply_norm(self, "weight")

    def inject(self, x: torch.Tensor) -> torch.Tensor:
        """Kernel-2 causal convolution of [previous embedding, segment] → (B, L', 4·d_hidden)."""
        return self.inject_conv(x.transpose(1, 2)).transpose(1, 2)

    def output(self, z: torch.Tensor) -> torch.Tensor:
        """The last ``d_out`` channels of h."""
        return z[..., self.d_hidden - self.d_out : self.d_hidden]

    def forward(self, z1s, us, z0):
        n = self.d_hidden
        qlen = z1s.shape[1]
        h_full = self.drop(torch.cat([z0[:, -1:, :n], z1s[..., :n]], dim=1))
        gates = self.hidden_conv(h_full.transpose(1, 2)).transpose(1, 2) + us[:, -qlen:]
        c_prev = torch.cat([z0[:, -1:, n:], z1s[:, :-1, n:]], dim=1)
        i, o, g, f = gates.chunk(4, dim=2)
        c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return torch.cat([h, c], dim=2)
