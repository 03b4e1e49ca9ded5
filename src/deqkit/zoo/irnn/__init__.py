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
from .config import IRNNConfig
from .model import VARIANTS, IncrementalRNN, SequenceSolution
from .network import RecurrentBaseline, SequenceNet, matched_hidden, parameter_count

#: The trainer's task for this model (the blocks recipes choose ``classification``).
TASK = "deqkit.zoo.irnn.task:SequenceTask"

__all__ = [
    "TASK",
    "VARIANTS",
    "BlockClassifier",
    "IncrementalBlock",
    "IRNNConfig",
    "IncrementalCell",
    "IncrementalResidualBlock",
    "IncrementalTransformerBlock",
    "IncrementalRNN",
    "RecurrentBaseline",
    "SequenceNet",
    "SequenceSolution",
    "build",
    "matched_hidden",
    "parameter_count",
]


def build(model_cfg: dict, deq_options: dict, data_info: dict):
    """Build a recipe's network: a sequence model (iRNN or matched baseline) or a block classifier.

    Args:
        model_cfg: :class:`IRNNConfig` fields (a ``name`` key is ignored).
        deq_options: ``dk.DEQ`` keyword arguments for the root solves (ignored by Euler/baselines).
        data_info: for sequences ``input_size``, ``num_outputs`` and ``kind``; for blocks
            ``num_classes`` and ``image_size``.

    >>> info = {"input_size": 2, "num_outputs": 1, "kind": "regression"}
    >>> net = build({"name": "irnn", "hidden": 8}, {"max_iter": 5}, info)
    >>> import torch
    >>> out, sol = net(torch.randn(3, 4, 2))
    >>> out.shape, sol.step_nstep.shape
    (torch.Size([3]), torch.Size([4]))
    >>> lstm = build({"encoder": "lstm", "hidden": 8}, {}, info)
    >>> abs(parameter_count(lstm) - parameter_count(net)) <= 10
    True
    """
    cfg = IRNNConfig.from_dict({k: v for k, v in model_cfg.items() if k != "name"})
    if cfg.arch == "blocks":
        missing = [k for k in ("num_classes", "image_size") if k not in data_info]
        if missing:
            raise ValueError(f"data_info lacks {missing}; got keys {sorted(data_info)}")
        return BlockClassifier(
            cfg.kind, cfg.mode, width=cfg.width, depth=cfg.depth, alpha=cfg.alpha,
            image_size=data_info["image_size"], num_classes=data_info["num_classes"],
            deq=deq_options, tied=cfg.tied,
        )  # fmt: skip
    missing = [k for k in ("input_size", "num_outputs", "kind") if k not in data_info]
    if missing:
        raise ValueError(f"data_info lacks {missing}; got keys {sorted(data_info)}")
    inputs, outputs = data_info["input_size"], data_info["num_outputs"]
    readout = "all" if data_info["kind"] == "per_step" else "last"
    variant = cfg.variant if cfg.encoder == "irnn" else "euler"
    deq = {} if variant == "euler" else deq_options
    rnn = IncrementalRNN(
        inputs, cfg.hidden, variant=variant, euler_start=cfg.euler_start,
        root_step=cfg.root_step, deq=deq, **cfg.cell_options(),
    )  # fmt: skip
    net = SequenceNet(rnn, outputs, readout)
    if cfg.encoder == "irnn":
        return net
    hidden = cfg.hidden
    if cfg.match_params:
        hidden = matched_hidden(cfg.encoder, parameter_count(net), inputs, outputs)
    return SequenceNet(RecurrentBaseline(cfg.encoder, inputs, hidden), outputs, readout)
