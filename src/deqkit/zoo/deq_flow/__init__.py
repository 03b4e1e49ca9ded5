"""DEQ-Flow: optical flow as the equilibrium of RAFT's update block (Bai, Geng, Huang, Kolter,
CVPR 2022), with the unrolled RAFT baseline, flow metrics and the colour-wheel picture."""

from __future__ import annotations

from .model import DEQFlow, FlowCell, FlowConfig
from .task import OpticalFlow

__all__ = ["TASK", "DEQFlow", "FlowCell", "FlowConfig", "OpticalFlow", "build"]

#: Trained on image pairs with the masked L1 (sequence) loss; "best" is the lowest EPE.
TASK = OpticalFlow


def build(model_cfg: dict, deq_options: dict, data_info: dict) -> DEQFlow:
    """Build DEQ-Flow (or its unrolled baseline, ``unroll: K``) from a recipe's sections.

    >>> model = build({"name": "deq_flow", "hidden": 8, "context": 8}, {"max_iter": 2},
    ...               {"in_channels": 3, "image_size": [32, 48]})
    >>> type(model).__name__, model.config.downsample
    ('DEQFlow', 4)
    """
    if data_info.get("in_channels", 3) != 3:
        raise ValueError(f"DEQ-Flow takes RGB pairs, got in_channels={data_info['in_channels']}")
    options = {k: v for k, v in model_cfg.items() if k != "name"}
    return DEQFlow(FlowConfig.from_dict(options), **deq_options)
