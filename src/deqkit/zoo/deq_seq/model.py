"""A language model around a sequence body: embedding → DEQ / unroll / stack / LSTM → softmax."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import deqkit as dk

from .baselines import LSTMBody, UntiedStack
from .seq import SequenceDEQ

__all__ = ["SeqLMConfig", "SequenceLM"]

BLOCKS = ("transformer", "trellisnet", "lstm")
MODES = ("deq", "unrolled", "untied")


@dataclass(frozen=True)
class SeqLMConfig:
    """Options of :class:`SequenceLM` (a recipe's ``model`` section, less ``name``).

    Args:
        block: "transformer" (DEQ-Transformer cell), "trellisnet" or "lstm" (baseline).
        mode: "deq" (solve to equilibrium), "unrolled" (the same cell applied ``layers`` times,
            weight-tied, backpropagated explicitly) or "untied" (``layers`` different cells).
        layers: depth of the unrolled / untied network, or LSTM layers.
        d_model: embedding width (and the Transformer's d).
        n_head, d_inner: attention heads and FFN width of the Transformer block.
        d_hidden, d_out: TrellisNet h/c width and output channels; LSTM width (d_hidden).
        mem_len: history positions carried to the next segment (Transformer; TrellisNet uses 1).
        dropout: variational dropout inside the cell.
        attn_dropout: dropout on the Transformer's attention probabilities (one mask per solve).
        subseq_len: solve a segment in subsequences of this many positions, each with the
            earlier ones as history (0: the whole segment at once; DEQ mode only).
        emb_dropout: token-level variational dropout on the embeddings (whole tokens dropped).
        pre_ln: pre-LN Transformer block instead of post-LN.
        residual: the Transformer block adds z to the attention output (reference code) or
            not (the paper's equation; better-conditioned equilibria).
        weight_norm, init_std: weight norm on the cell, N(0, init_std) initialisation.
        adaptive_cutoffs: vocabulary cutoffs for ``nn.AdaptiveLogSoftmaxWithLoss``; empty gives
            a plain (optionally tied) softmax.
        div_value: the adaptive softmax's width divisor per cluster.
        tie_weights: share the embedding with the plain softmax (needs d_out == d_model).
        emb_std: std of the embedding's initialisation. Unit-scale embeddings make the
            injection, not z, dominate Q, K, V at the start: f is then a contraction.

    >>> SeqLMConfig.from_dict({"block": "trellisnet", "d_hidden": 16}).d_out
    16
    >>> SeqLMConfig.from_dict({"depth": 3})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown SeqLMConfig option(s) ['depth']; valid: ['adaptive_cutoffs', ...
    """

    block: str = "transformer"
    mode: str = "deq"
    layers: int = 2
    d_model: int = 64
    n_head: int = 4
    d_inner: int = 128
    d_hidden: int = 64
    d_out: int | None = None
    mem_len: int = 32
    dropout: float = 0.0
    attn_dropout: float = 0.0
    emb_dropout: float = 0.0
    subseq_len: int = 0
    pre_ln: bool = False
    residual: bool = False
    weight_norm: bool = True
    init_std: float = 0.05
    adaptive_cutoffs: tuple[int, ...] = ()
    div_value: float = 4.0
    tie_weights: bool = False
    emb_std: float = 1.0

    def __post_init__(self):
        if self.block not in BLOCKS:
            raise ValueError(f"SeqLMConfig.block must be one of {BLOCKS}, got {self.block!r}")
        if self.mode not in MODES:
            raise ValueError(f"SeqLMConfig.mode must be one of {MODES}, got {self.mode!r}")
        if self.block == "lstm" and self.mode != "deq":
            raise ValueError(f"the lstm block has no mode {self.mode!r}; leave mode at 'deq'")
        for name in ("layers", "d_model", "n_head", "d_inner", "d_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SeqLMConfig.{name} must be a positive int, got {value!r}")
        if isinstance(self.mem_len, bool) or not isinstance(self.mem_len, int) or self.mem_len < 0:
            raise ValueError(f"SeqLMConfig.mem_len must be an int >= 0, got {self.mem_len!r}")
        if (
            isinstance(self.subseq_len, bool)
            or not isinstance(self.subseq_len, int)
            or self.subseq_len < 0
        ):
            raise ValueError(f"SeqLMConfig.subseq_len must be an int >= 0, got {self.subseq_len!r}")
        for name in ("dropout", "attn_dropout", "emb_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"SeqLMConfig.{name} must be in [0, 1), got {getattr(self, name)}")
        object.__setattr__(self, "adaptive_cutoffs", tuple(int(c) for c in self.adaptive_cutoffs))
        if self.d_out is None:
            object.__setattr__(self, "d_out", self.d_hidden)

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> SeqLMConfig:
        """Build from a plain dict, rejecting unknown keys with the list of valid ones."""
        valid = sorted(f.name for f in dataclasses.fields(cls))
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ValueError(f"unknown SeqLMConfig option(s) {unknown}; valid: {valid}")
        return cls(**options)


def _body(cfg: SeqLMConfig, deq_options: dict) -> nn.Module:
    if cfg.block == "lstm":
        return LSTMBody(cfg.d_model, cfg.d_hidden, cfg.layers, cfg.dropout)

    # The cells live in their own zoo packages, which import this one: import them here.
    def make_cell():
        if cfg.block == "transformer":
            from deqkit.zoo.deq_transformer.cell import DEQTransformerCell

            return DEQTransformerCell(
                cfg.d_model, cfg.n_head, cfg.d_inner, cfg.dropout, cfg.pre_ln,
                cfg.init_std, cfg.weight_norm, cfg.residual, cfg.attn_dropout,
            )  # fmt: skip
        from deqkit.zoo.trellisnet.cell import TrellisNetCell

        return TrellisNetCell(
            cfg.d_model, cfg.d_hidden, cfg.d_out, cfg.dropout, cfg.init_std, cfg.weight_norm
        )

    # TrellisNet reads one position of history, its memory is that position only.
    mem_len = cfg.mem_len if cfg.block == "transformer" else 1
    if cfg.mode == "untied":
        return UntiedStack([make_cell() for _ in range(cfg.layers)], mem_len)
    unroll = cfg.layers if cfg.mode == "unrolled" else 0
    return SequenceDEQ(
        make_cell(), mem_len, unroll=unroll, subseq_len=cfg.subseq_len, **deq_options
    )


class SequenceLM(nn.Module):
    """Token language model: ``forward(tokens, memory)`` → (features, memory, solution).

    The memory of one segment (history padding of the DEQ, per-layer states of a stack, the
    LSTM's (h, c)) is passed to the next; :meth:`loss` gives the mean negative log-likelihood in
    nats and :meth:`log_probs` the full distribution.

    >>> _ = torch.manual_seed(0)
    >>> cfg = SeqLMConfig(d_model=8, n_head=2, d_inner=16, mem_len=4)
    >>> lm = SequenceLM(cfg, vocab_size=11, max_iter=50, tol=1e-3)
    >>> tokens = torch.randint(0, 11, (2, 6))
    >>> h, mem, sol = lm(tokens)
    >>> h.shape, lm.log_probs(h).shape, sol.status.name
    (torch.Size([2, 6, 8]), torch.Size([2, 6, 11]), 'CONVERGED')
    """

    def __init__(self, config: SeqLMConfig, vocab_size: int, **deq_options):
        super().__init__()
        if not isinstance(config, SeqLMConfig):
            raise TypeError(f"config must be a SeqLMConfig, got {type(config).__name__}")
        cfg = self.config = config
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        nn.init.normal_(self.embed.weight, 0.0, cfg.emb_std)
        self.emb_drop = dk.VariationalDropoutToken(cfg.emb_dropout)
        self.body = _body(cfg, deq_options)
        d_feat = cfg.d_model if cfg.block == "transformer" else cfg.d_out
        if cfg.block == "lstm":
            d_feat = cfg.d_hidden
        self.adaptive = None
        if cfg.adaptive_cutoffs:
            self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(
                d_feat, vocab_size, list(cfg.adaptive_cutoffs), div_value=cfg.div_value
            )
        else:
            self.head = nn.Linear(d_feat, vocab_size)
            if cfg.tie_weights and d_feat == cfg.d_model:
                self.head.weight = self.embed.weight

    @property
    def deq(self) -> dk.DEQ | None:
        """The DEQ layer inside (None for explicit stacks and the LSTM)."""
        return getattr(self.body, "deq", None)

    def forward(self, tokens: torch.Tensor, memory: Any = None, z_init=None):
        """Features (B, L', d) of every position of ``tokens`` (B, L'), the next memory, the
        solution of the DEQ (or a record of the explicit pass)."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (batch, length), got shape {tuple(tokens.shape)}")
        self.emb_drop.reset()
        x = self.emb_drop(self.embed(tokens))
        z, memory, sol = self.body(x, memory, z_init)
        return self.body.output(z), memory, sol

    def log_probs(self, features: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (…, V) of the next token."""
        flat = features.reshape(-1, features.shape[-1])
        if self.adaptive is not None:
            out = self.adaptive.log_prob(flat)
        else:
            out = torch.log_softmax(self.head(flat), dim=-1)
        return out.reshape(*features.shape[:-1], self.vocab_size)

    def loss(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood (nats per token) of ``targets`` (B, L')."""
        flat, t = features.reshape(-1, features.shape[-1]), targets.reshape(-1)
        if self.adaptive is not None:
            return self.adaptive(flat, t).loss
        return nn.functional.cross_entropy(self.head(flat), t)
