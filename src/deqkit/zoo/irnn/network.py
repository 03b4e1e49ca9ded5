"""A sequence network: a recurrent encoder (incremental or baseline) and a linear readout.

The baselines are PyTorch's LSTM, GRU and tanh RNN with the hidden size chosen so that the whole
network has (as nearly as an integer size allows) the parameter count of the incremental one.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BASELINES", "RecurrentBaseline", "SequenceNet", "matched_hidden", "parameter_count"]

BASELINES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
_GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def parameter_count(module: nn.Module) -> int:
    """Number of trainable parameters.

    >>> parameter_count(nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _baseline_count(kind: str, input_size: int, hidden: int, outputs: int) -> int:
    # Each gate has an input matrix, a recurrent matrix and PyTorch's two bias vectors.
    gates = _GATES[kind]
    return gates * (hidden * input_size + hidden * hidden + 2 * hidden) + outputs * (hidden + 1)


def matched_hidden(kind: str, target: int, input_size: int, outputs: int) -> int:
    """The baseline hidden size whose network parameter count is nearest to ``target``.

    >>> h = matched_hidden("lstm", 20_000, 1, 10)
    >>> h, parameter_count(SequenceNet(RecurrentBaseline("lstm", 1, h), 10))
    (68, 20002)
    """
    if kind not in BASELINES:
        raise ValueError(f"baseline must be one of {sorted(BASELINES)}, got {kind!r}")
    sizes = range(1, 4096)
    return min(sizes, key=lambda h: abs(_baseline_count(kind, input_size, h, outputs) - target))


class RecurrentBaseline(nn.Module):
    """``nn.LSTM`` / ``nn.GRU`` / tanh ``nn.RNN`` returning ``(states, None)`` like IncrementalRNN.

    >>> import torch
    >>> h, sol = RecurrentBaseline("gru", 2, 5)(torch.randn(3, 7, 2))
    >>> h.shape, sol
    (torch.Size([3, 7, 5]), None)
    """

    def __init__(self, kind: str, input_size: int, hidden: int):
        super().__init__()
        if kind not in BASELINES:
            raise ValueError(f"baseline must be one of {sorted(BASELINES)}, got {kind!r}")
        self.kind, self.hidden = kind, hidden
        self.rnn = BASELINES[kind](input_size, hidden, batch_first=True)

    def forward(self, x, h0=None, *, keep_grads: bool = False):
        if keep_grads:
            # nn.LSTM runs the loop in C++: step through it to expose every h_t.
            return self._stepwise(x)
        states, _ = self.rnn(x)
        return states, None

    def _stepwise(self, x):
        state, states = None, []
        for t in range(x.shape[1]):
            _, state = self.rnn(x[:, t : t + 1], state)
            h = state[0][0] if self.kind == "lstm" else state[0]
            if h.requires_grad:
                h.retain_grad()
            # The next step reads this very tensor, so its .grad is the full ∂L/∂h_t.
            state = (h.unsqueeze(0), state[1]) if self.kind == "lstm" else h.unsqueeze(0)
            states.append(h)
        self.last_states = states
        return torch.stack(states, dim=1), None


class SequenceNet(nn.Module):
    """Encoder + linear readout of the last state (``readout="last"``) or of every state ("all").

    ``forward(x)`` returns ``(output, solution)``: (B, outputs) or (B, T, outputs), squeezed to
    (B,) for a single regression output, and the encoder's solver statistics (None for explicit
    encoders).

    >>> import torch
    >>> from deqkit.zoo.irnn import IncrementalRNN
    >>> net = SequenceNet(IncrementalRNN(1, 4, variant="euler"), 3)
    >>> net(torch.randn(2, 6, 1))[0].shape
    torch.Size([2, 3])
    """

    def __init__(self, encoder: nn.Module, outputs: int, readout: str = "last"):
        super().__init__()
        if readout not in ("last", "all"):
            raise ValueError(f"readout must be 'last' or 'all', got {readout!r}")
        self.encoder, self.readout = encoder, readout
        self.head = nn.Linear(encoder.hidden, outputs)

    def forward(self, x, *, keep_grads: bool = False):
        states, sol = self.encoder(x, keep_grads=keep_grads)
        out = self.head(states[:, -1] if self.readout == "last" else states)
        return (out.squeeze(-1) if out.shape[-1] == 1 else out), sol
