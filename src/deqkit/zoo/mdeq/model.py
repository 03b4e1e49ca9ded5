"""MDEQ for image classification: stem → multiscale DEQ (tuple state) → HRNet-style head."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import deqkit as dk

from .cell import MDEQCell

__all__ = ["MDEQClassifier", "MDEQConfig"]

NORMS = ("batch", "group")


def _as_int_tuple(name: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise TypeError(f"MDEQConfig.{name} must be a non-empty list of ints, got {value!r}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"MDEQConfig.{name} must hold positive ints, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class MDEQConfig:
    """Architecture options of :class:`MDEQClassifier` (the recipe's ``model`` section).

    Args:
        channels: channels per resolution, highest resolution first (one branch each).
        expansion: width factor inside each residual block.
        groups: GroupNorm groups inside f (must divide every width used there).
        dropout: variational 2-D dropout rate inside f (one mask per DEQ call).
        weight_norm: weight-normalise the convolutions of f (weights evaluated once per call).
        downsample: stride-2 convolutions in the stem (0 for CIFAR-sized inputs, up to 2).
        head_channels: head widths per resolution (defaults to ``channels``).
        final_channels: width of the head's last 1x1 convolution before pooling.
        norm: normalisation of the stem and head outside f, "batch" or "group".

    >>> MDEQConfig(channels=[8, 16]).head_channels
    (8, 16)
    """

    channels: tuple[int, ...] = (8, 16)
    expansion: int = 2
    groups: int = 4
    dropout: float = 0.0
    weight_norm: bool = True
    downsample: int = 0
    head_channels: tuple[int, ...] | None = None
    final_channels: int = 64
    norm: str = "batch"

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalise YAML lists to tuples once, here
        set_(self, "channels", _as_int_tuple("channels", self.channels))
        head = self.channels if self.head_channels is None else self.head_channels
        set_(self, "head_channels", _as_int_tuple("head_channels", head))
        if len(self.head_channels) != len(self.channels):
            raise ValueError(
                f"MDEQConfig.head_channels needs one entry per branch ({len(self.channels)}), "
                f"got {self.head_channels!r}"
            )
        for name in ("expansion", "groups", "final_channels", "downsample"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"MDEQConfig.{name} must be an int, got {value!r}")
        if self.expansion < 1 or self.groups < 1 or self.final_channels < 1:
            raise ValueError("MDEQConfig.expansion, groups and final_channels must be >= 1")
        if not 0 <= self.downsample <= 2:
            raise ValueError(f"MDEQConfig.downsample must be 0, 1 or 2, got {self.downsample}")
        for c in self.channels:
            if c % self.groups or (c % max(self.groups // 2, 1)):
                raise ValueError(
                    f"MDEQConfig.groups={self.groups} must divide every branch width, "
                    f"got channels={self.channels!r}"
                )
        if self.norm == "group" and any(h % self.groups for h in self.head_channels):
            raise ValueError(
                f"MDEQConfig.groups={self.groups} must divide head_channels "
                f"{self.head_channels!r} when norm='group'"
            )
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)):
            raise TypeError(f"MDEQConfig.dropout must be a number, got {self.dropout!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"MDEQConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.weight_norm, bool):
            raise TypeError(f"MDEQConfig.weight_norm must be a bool, got {self.weight_norm!r}")
        if self.norm not in NORMS:
            raise ValueError(f"MDEQConfig.norm must be one of {NORMS}, got {self.norm!r}")

    @classmethod
    def from_dict(cls, options: dict) -> MDEQConfig:
        """Build from a recipe's ``model`` section, naming the valid keys on a typo."""
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ValueError(f"unknown MDEQ model option(s) {unknown}; valid keys: {valid}")
        return cls(**options)


def _norm(kind: str, channels: int, groups: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.GroupNorm(groups, channels)


def _conv_norm_relu(c_in: int, c_out: int, cfg: MDEQConfig, stride: int = 1, k: int = 3):
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False),
        _norm(cfg.norm, c_out, cfg.groups),
        nn.ReLU(),
    )


class _Head(nn.Module):
    """Per-resolution features, stride-2 downsample-and-sum, 1x1 conv, global pooling, linear."""

    def __init__(self, cfg: MDEQConfig, num_classes: int):
        super().__init__()
        widths = cfg.head_channels
        self.incre = nn.ModuleList(
            _conv_norm_relu(c, h, cfg) for c, h in zip(cfg.channels, widths, strict=True)
        )
        self.down = nn.ModuleList(
            _conv_norm_relu(widths[i], widths[i + 1], cfg, stride=2) for i in range(len(widths) - 1)
        )
        self.final = _conv_norm_relu(widths[-1], cfg.final_channels, cfg, k=1)
        self.fc = nn.Linear(cfg.final_channels, num_classes)

    def forward(self, z: tuple[torch.Tensor, ...]) -> torch.Tensor:
        y = self.incre[0](z[0])
        for i in range(1, len(z)):
            y = self.incre[i](z[i]) + self.down[i - 1](y)
        return self.fc(self.final(y).mean(dim=(2, 3)))


class MDEQClassifier(nn.Module):
    """Multiscale DEQ classifier; ``forward(x)`` returns ``(logits, solution)``.

    Args:
        config: an :class:`MDEQConfig`.
        in_channels: input image channels.
        num_classes: number of classes.
        **deq_options: keyword arguments of :class:`deqkit.DEQ` (solver, backward, tol, ...).

    >>> model = MDEQClassifier(MDEQConfig(), 1, 10, max_iter=4, on_failure="ignore")
    >>> logits, sol = model(torch.randn(2, 1, 16, 16))
    >>> tuple(logits.shape), int(sol.nstep.max()) <= 4
    ((2, 10), True)
    """

    def __init__(self, config: MDEQConfig, in_channels: int, num_classes: int, **deq_options):
        super().__init__()
        self.config = config
        c0 = config.channels[0]
        self.stem = nn.Sequential(
            _conv_norm_relu(in_channels, c0, config, stride=2 if config.downsample >= 1 else 1),
            _conv_norm_relu(c0, c0, config, stride=2 if config.downsample >= 2 else 1),
        )
        cell = MDEQCell(config.channels, config.expansion, config.groups, self._dropout_factory())
        if config.weight_norm:
            # The paper normalises the block convolutions and the post-fusion 1x1 convolutions;
            # the fusion paths are followed by GroupNorm, which already fixes their scale.
            dk.apply_norm(cell, "weight", skip=("fusion.paths",))
        self.deq = dk.DEQ(cell, **deq_options)
        self.head = _Head(config, num_classes)

    def _dropout_factory(self):
        p = self.config.dropout
        if p == 0.0:
            return nn.Identity
        return lambda: dk.VariationalDropout2d(p)

    def injection(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The tuple injected into f: stem features at resolution 0, zeros elsewhere."""
        h = self.stem(x)
        height, width = h.shape[-2:]
        out = [h]
        for c in self.config.channels[1:]:
            # A 3x3 stride-2 convolution with padding 1 maps size s to ceil(s / 2).
            height, width = (height + 1) // 2, (width + 1) // 2
            out.append(h.new_zeros(h.shape[0], c, height, width))
        return tuple(out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dk.Solution]:
        z, sol = self.deq(self.injection(x))
        return self.head(z), sol
