"""Incremental RNN (Kag, Zhang, Saligrama, ICLR 2020), with each step's equilibrium solved exactly.

Not Le et al.'s identity-initialised "IRNN": here h_t is the equilibrium of
α ⊙ (h_t − h_{t−1}) = φ(U(h_t + h_{t−1}) + W x_t + b).
"""

from __future__ import annotations

from .blocks import (
    BlockClassifier,
    IncrementalBlock,
    IncrementalResidualBlock,
    IncrementalTransformerBlock,
)
from .cell import IncrementalCell
from .model import VARIANTS, IncrementalRNN, SequenceSolution
from .network import RecurrentBaseline, SequenceNet, matched_hidden, parameter_count

__all__ = [
    "VARIANTS",
    "BlockClassifier",
    "IncrementalBlock",
    "IncrementalCell",
    "IncrementalResidualBlock",
    "IncrementalTransformerBlock",
    "IncrementalRNN",
    "RecurrentBaseline",
    "SequenceNet",
    "SequenceSolution",
    "matched_hidden",
    "parameter_count",
]
