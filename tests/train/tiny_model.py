"""A test-only model with the zoo builder signature: a small convolutional DEQ classifier."""

from __future__ import annotations

import torch
from torch import nn

import deqkit as dk


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


def build(model_cfg: dict, deq_options: dict, data_info: dict) -> nn.Module:
    options = {"channels": 4, "dropout": 0.1, **model_cfg}
    unknown = sorted(set(options) - {"channels", "dropout"})
    if unknown:
        raise ValueError(f"unknown tiny model option(s) {unknown}")
    return TinyDEQ(
        data_info["in_channels"],
        data_info["num_classes"],
        options["channels"],
        options["dropout"],
        deq_options,
    )


HERE = __file__.rsplit("/", 1)[0]

#: A recipe small enough for a training step in a few tens of milliseconds on one core.
RECIPE = {
    "description": "tiny test DEQ on digits",
    "model": {"name": "tiny_model:build", "channels": 4, "dropout": 0.1},
    "deq": {
        "solver": "anderson",
        "solver_options": {"m": 3},
        "backward": "implicit",
        "backward_options": {"tol": 1.0e-4, "max_iter": 8},
        "tol": 1.0e-3,
        "max_iter": 8,
    },
    "data": {"name": "digits", "batch_size": 16, "eval_batch_size": 360},
    "optim": {"name": "adam", "lr": 1.0e-2, "warmup_steps": 1},
    "train": {"steps": 6, "eval_every": 3, "checkpoint_every": 3, "log_every": 1, "seed": 0},
}


def write_recipe(path, **sections) -> str:
    """Write RECIPE (with ``sections`` merged into its sections) as YAML; returns the path."""
    import yaml

    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in RECIPE.items()}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    with open(path, "w") as fh:
        yaml.safe_dump(raw, fh)
    return str(path)


def build_mlp(model_cfg: dict, deq_options: dict, data_info: dict) -> nn.Module:
    """A model without a DEQ layer: the loop must accept ``(logits, None)``."""

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            size = data_info["in_channels"] * data_info["image_size"] ** 2
            self.net = nn.Sequential(
                nn.Flatten(),
                nn.Linear(size, 64),
                nn.ReLU(),
                nn.Linear(64, data_info["num_classes"]),
            )

        def forward(self, x):
            return self.net(x), None

    return MLP()
