"""Typed model options of the ``irnn`` zoo entry (a recipe's ``model`` section)."""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["IRNNConfig"]


@dataclass(frozen=True)
class IRNNConfig:
    """``arch="sequence"``: an encoder over (B, T, D) sequences and a linear readout.

    ``encoder`` is "irnn" (with ``variant`` "euler", "implicit" or "phantom") or a baseline
    "lstm", "gru", "rnn", whose hidden size is chosen to match the parameters of the iRNN network
    with ``hidden`` units (``match_params``). ``arch="blocks"``: a digits classifier of
    incremental residual/Transformer layers (``kind``, ``mode``, ``width``, ``depth``, ``tied``).

    >>> IRNNConfig.from_dict({"hidden": 16}).hidden
    16
    >>> IRNNConfig.from_dict({"hiden": 16})
    Traceback (most recent call last):
    ...
    ValueError: unknown irnn model options ['hiden']; valid: [...]
    """

    arch: str = "sequence"
    encoder: str = "irnn"
    variant: str = "implicit"
    hidden: int = 32
    activation: str = "tanh"
    recurrent: str = "stable"
    alpha: float = 1.0
    eta: float = 1.0
    learn_alpha: bool = True
    learn_eta: bool = True
    euler_steps: int = 1
    euler_start: str = "zero"
    root_step: float = 1.0
    init_scale: float = 0.3
    gamma: float = 0.1
    match_params: bool = True
    kind: str = "residual"
    mode: str = "incremental"
    width: int = 16
    depth: int = 3
    tied: bool = True

    def __post_init__(self):
        if self.arch not in ("sequence", "blocks"):
            raise ValueError(f"model.arch must be 'sequence' or 'blocks', got {self.arch!r}")
        if self.encoder not in ("irnn", "lstm", "gru", "rnn"):
            raise ValueError(f"model.encoder must be irnn, lstm, gru or rnn, got {self.encoder!r}")
        if not isinstance(self.hidden, int) or self.hidden < 1:
            raise ValueError(f"model.hidden must be a positive integer, got {self.hidden!r}")

    @classmethod
    def from_dict(cls, options: dict) -> IRNNConfig:
        """Options from a recipe; unknown keys are rejected with the valid ones."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise ValueError(f"unknown irnn model options {unknown}; valid: {sorted(names)}")
        return cls(**options)

    def cell_options(self) -> dict:
        """The :class:`IncrementalCell` keyword arguments."""
        keys = ("activation", "recurrent", "alpha", "eta", "learn_alpha", "learn_eta",
                "euler_steps", "init_scale", "gamma")  # fmt: skip
        return {k: getattr(self, k) for k in keys}
