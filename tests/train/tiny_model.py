"""A test-only model with the zoo builder signature: a small convolutional DEQ classifier."""

from __future__ import annotations

import torch
from torch import nn

import deqkit as dk
from deqkit.train.config import deq_kwargs


class TinyCell(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm = nn.GroupNorm(1, channels)

    def forward(self, z, x):
        return torch.tanh(self.norm(0.5 * self.conv(z) + x))


class TinyDEQ(nn.Module):
    def __init__(self, in_channels, num_classes, channels, dropout, deq_options):
        super().__init__()
        self.inject = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.deq = dk.DEQ(TinyCell(channels), **deq_options)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x):
        z, sol = self.deq(self.inject(x))
        return self.head(self.drop(z.mean(dim=(2, 3)))), sol


def build(model_cfg: dict, deq_cfg: dict, data_info: dict) -> nn.Module:
    options = {"channels": 4, "dropout": 0.1, **model_cfg}
    unknown = sorted(set(options) - {"channels", "dropout"})
    if unknown:
        raise ValueError(f"unknown tiny model option(s) {unknown}")
    return TinyDEQ(
        data_info["in_channels"],
        data_info["num_classes"],
        options["channels"],
        options["dropout"],
        deq_kwargs(deq_cfg),
    )
