"""DEQ-Flow: RAFT's update block as the map f of a deep equilibrium (Bai, Geng, Huang, Kolter,
"Deep Equilibrium Optical Flow Estimation", CVPR 2022), and its unrolled RAFT baseline.

The state is z = (h, flow) at 1/4 or 1/8 resolution, h starting at zeros. The feature and
context encoders and the correlation pyramid run once per pair, outside f; f looks up the
pyramid at the current correspondence, encodes the motion, updates h with the separable ConvGRU
and adds the flow head's Δ to the flow. Convex upsampling (a learned mask from h) runs on the
returned state(s), outside f.

Gradients, ``detach_flow``:

* ``True`` (RAFT's practice, DEQ-Flow's default): f(h, c) = (h', sg(c) + Δ(h, sg(c))), sg =
  stop-gradient. The implicit backward then solves the adjoint of a Jacobian without the ∂/∂c
  columns (∂h'/∂c = 0, ∂c'/∂c = 0 instead of I + ∂Δ/∂c): not the implicit gradient of the
  fixed point, an approximation that treats the flow as a constant input of the last step. The
  phantom / one-step gradients (k steps from z*) differentiate the same map, so with k = 1
  they equal the gradient of Δ and h' at z* with the flow held fixed.
* ``False`` (DEQ-Flow's ``--all_grad``): f is differentiated in full, and the implicit backward
  gives the exact implicit-function-theorem gradient of z* = f(z*).

>>> import torch
>>> model = DEQFlow(FlowConfig(hidden=8, context=8, feature_dim=16, encoder_widths=(8, 8, 16),
...                 corr_dim=8, flow_dim=8, motion_dim=16, head_dim=16), max_iter=3,
...                 on_failure="ignore")
>>> flow, sol = model(torch.rand(2, 3, 32, 48), torch.rand(2, 3, 32, 48))
>>> tuple(flow.shape), tuple(sol.z[1].shape)
((2, 2, 32, 48), (2, 2, 8, 12))
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import deqkit as dk

from .blocks import NORMS, ConvexUpsampler, Encoder, FlowHead, MotionEncoder, SepConvGRU
from .corr import corr_lookup, corr_pyramid, pixel_grid

__all__ = ["DEQFlow", "FlowCell", "FlowConfig"]


@dataclass(frozen=True)
class FlowConfig:
    """Architecture options (the recipe's ``model`` section).

    Args:
        hidden: GRU hidden channels (DEQ-Flow tiny 32, base 128, huge 256).
        context: context-feature channels injected into the GRU.
        feature_dim: matching-feature channels of the correlation.
        encoder_widths: the three residual-stage widths of both encoders.
        feature_norm, context_norm: "instance", "batch", "group" or "none".
        downsample: 8 (RAFT) or 4 (small images): the resolution of the state.
        corr_levels, corr_radius: correlation pyramid levels and lookup radius.
        corr_dim, flow_dim, motion_dim: motion-encoder widths.
        head_dim: middle width of the flow head and the mask head.
        weight_norm: weight-normalise the update block (evaluated once per forward).
        detach_flow: stop the gradient through the flow input of f (see the module docstring).
        unroll: 0 for the DEQ; K > 0 applies the same update block K times explicitly and
            returns all K predictions (RAFT, trained with the sequence loss).
        flow_step: α in the flow update c' = c + α·Δ (1: RAFT). Any α > 0 has the same fixed
            points; α < 1 damps the flow coordinate, an integrator of Δ.
    """

    hidden: int = 32
    context: int = 32
    feature_dim: int = 64
    encoder_widths: tuple[int, int, int] = (16, 24, 32)
    feature_norm: str = "instance"
    context_norm: str = "batch"
    downsample: int = 4
    corr_levels: int = 3
    corr_radius: int = 3
    corr_dim: int = 48
    flow_dim: int = 32
    motion_dim: int = 48
    head_dim: int = 64
    weight_norm: bool = True
    detach_flow: bool = True
    unroll: int = 0
    flow_step: float = 1.0

    def __post_init__(self):
        widths = self.encoder_widths
        if not isinstance(widths, (list, tuple)) or len(widths) != 3:
            raise TypeError(f"FlowConfig.encoder_widths must be 3 ints, got {widths!r}")
        object.__setattr__(self, "encoder_widths", tuple(widths))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
                raise TypeError(f"FlowConfig.{f.name} must be an int, got {value!r}")
            if f.type == "bool" and not isinstance(value, bool):
                raise TypeError(f"FlowConfig.{f.name} must be a bool, got {value!r}")
            if f.type == "float" and (
                isinstance(value, bool) or not isinstance(value, (int, float))
            ):
                raise TypeError(f"FlowConfig.{f.name} must be a number, got {value!r}")
        if not 0 < self.flow_step <= 1:
            raise ValueError(f"FlowConfig.flow_step must be in (0, 1], got {self.flow_step!r}")
        small = [
            f.name
            for f in dataclasses.fields(self)
            if f.type == "int" and getattr(self, f.name) < 1
        ]
        small = [n for n in small if n not in ("unroll", "corr_radius")]
        if small or self.unroll < 0 or self.corr_radius < 0 or min(self.encoder_widths) < 1:
            raise ValueError(f"FlowConfig sizes must be positive, got {self}")
        if self.downsample not in (4, 8):
            raise ValueError(f"FlowConfig.downsample must be 4 or 8, got {self.downsample}")
        if self.motion_dim < 3:
            raise ValueError(f"FlowConfig.motion_dim must be >= 3, got {self.motion_dim}")
        for key in ("feature_norm", "context_norm"):
            if getattr(self, key) not in NORMS:
                raise ValueError(
                    f"FlowConfig.{key} must be one of {NORMS}, got {getattr(self, key)!r}"
                )

    @classmethod
    def from_dict(cls, options: dict) -> FlowConfig:
        """Build from a recipe's ``model`` section, naming the valid keys on a typo."""
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ValueError(f"unknown DEQ-Flow model option(s) {unknown}; valid keys: {valid}")
        return cls(**options)


class FlowCell(nn.Module):
    """f((h, flow), (context, *pyramid)) = (h', flow + Δ): RAFT's update block."""

    def __init__(self, cfg: FlowConfig):
        super().__init__()
        self.cfg = cfg
        corr_channels = cfg.corr_levels * (2 * cfg.corr_radius + 1) ** 2
        self.motion = MotionEncoder(corr_channels, cfg.corr_dim, cfg.flow_dim, cfg.motion_dim)
        self.gru = SepConvGRU(cfg.hidden, cfg.context + cfg.motion_dim)
        self.head = FlowHead(cfg.hidden, cfg.head_dim)

    def initial_state(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """h = 0 and flow = 0 at the resolution of the context features."""
        context = x[0]
        b, _, h, w = context.shape
        return context.new_zeros(b, self.cfg.hidden, h, w), context.new_zeros(b, 2, h, w)

    def forward(self, z, x):
        hidden, flow = z
        context, pyramid = x[0], x[1:]
        if self.cfg.detach_flow:
            flow = flow.detach()
        b, _, h, w = flow.shape
        coords = pixel_grid(b, h, w, like=flow) + flow
        motion = self.motion(flow, corr_lookup(pyramid, coords, self.cfg.corr_radius))
        hidden = self.gru(hidden, torch.cat([context, motion], 1))
        return hidden, flow + self.cfg.flow_step * self.head(hidden)


class DEQFlow(nn.Module):
    """``forward(image1, image2, z0=None)`` -> ``(flow, solution)``; images (B, 3, H, W) in
    [0, 1] with H, W multiples of ``downsample``. ``flow`` is (B, 2, H, W), or a list with one
    prediction per sampled state (``n_states`` > 1, fixed-point correction) or per unrolled step.
    ``z0`` warm-starts the solve from a previous (h, flow), e.g. the previous frame's
    ``solution.z``. The unrolled baseline returns ``solution = None``. With
    ``flow_residual=True`` (training with ``task.residual_weight``), ``solution.aux`` holds
    :meth:`flow_residual` at the returned state.

    Args:
        config: a :class:`FlowConfig`.
        **deq_options: keyword arguments of :class:`deqkit.DEQ`.
    """

    def __init__(self, config: FlowConfig, **deq_options: Any):
        super().__init__()
        self.config = c = config
        self.fnet = Encoder(c.feature_dim, c.encoder_widths, c.feature_norm, c.downsample)
        self.cnet = Encoder(c.context, c.encoder_widths, c.context_norm, c.downsample)
        cell = FlowCell(c)
        if c.weight_norm:
            dk.apply_norm(cell, "weight")
        self.deq = dk.DEQ(cell, **deq_options)
        self.upsample = ConvexUpsampler(c.hidden, c.head_dim, c.downsample)

    def encode(self, image1: torch.Tensor, image2: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The injection of f: ReLU(context of frame 1) and the correlation pyramid."""
        if image1.shape != image2.shape or image1.dim() != 4 or image1.shape[1] != 3:
            raise ValueError(
                f"images must both be (B, 3, H, W), got {image1.shape}, {image2.shape}"
            )
        h, w = image1.shape[-2:]
        if h % self.config.downsample or w % self.config.downsample:
            raise ValueError(f"image size {h}x{w} is not a multiple of {self.config.downsample}")
        x1, x2 = 2 * image1 - 1, 2 * image2 - 1
        f1, f2 = self.fnet(torch.cat([x1, x2])).chunk(2)
        context = torch.relu(self.cnet(x1))
        return (context, *corr_pyramid(f1, f2, self.config.corr_levels))

    def unrolled(self, x, steps: int, z0=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """RAFT: the update block applied ``steps`` times from z0 (default zeros), every state."""
        cell = self.deq.cell
        z = cell.initial_state(x) if z0 is None else z0
        states = []
        with dk.cached_weights(cell):  # one weight-norm evaluation for all steps, as in the DEQ
            for _ in range(steps):
                z = cell(z, x)
                states.append(z)
        return states

    def flow_residual(self, x, z) -> torch.Tensor:
        """Mean |Δ| of f at the state z held fixed (detached), in full-resolution pixels: the
        flow part of the fixed-point residual, differentiable in the parameters only. A penalty
        on it (``task.residual_weight``) asks for Δ = 0 at the solver's answer."""
        hidden, flow = (t.detach() for t in z)
        cell = self.deq.cell
        with dk.cached_weights(cell):
            _, moved = cell((hidden, flow), x)
        return (moved - flow).abs().mean() * (self.config.downsample / self.config.flow_step)

    def forward(self, image1: torch.Tensor, image2: torch.Tensor, z0=None,
                flow_residual: bool = False):  # fmt: skip
        x = self.encode(image1, image2)
        if self.config.unroll:
            if flow_residual:
                raise ValueError("the flow residual penalty needs the DEQ (model.unroll: 0)")
            states, sol = self.unrolled(x, self.config.unroll, z0), None
        else:
            z, sol = self.deq(x, z0=z0)
            states = sol.outputs.states if self.deq.n_states > 1 else None
            states = states or [z]
            if flow_residual:
                sol = dataclasses.replace(sol, aux=self.flow_residual(x, z))
        flows = [self.upsample(h, flow) for h, flow in states]
        return (flows if len(flows) > 1 else flows[0]), sol
