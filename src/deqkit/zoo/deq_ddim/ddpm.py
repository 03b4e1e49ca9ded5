"""DDPM training by ε-prediction (Ho, Jain, Abbeel, NeurIPS 2020, eq. 14): draw t and ε, noise
the image to x_t = √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε, and regress ε_θ(x_t, t) on ε."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from .schedule import SCHEDULES, alpha_bars
from .unet import UNet, UNetConfig

__all__ = ["DDPM", "DDPMConfig", "ddpm_loss"]


@dataclass(frozen=True)
class DDPMConfig:
    """The training schedule (``schedule``, ``train_steps``) and the UNet's options."""

    schedule: str = "linear"
    train_steps: int = 1000
    unet: dict | None = None

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown beta schedule {self.schedule!r}; choose one of {SCHEDULES}")
        if not isinstance(self.train_steps, int) or self.train_steps < 2:
            raise ValueError(f"train_steps must be an int >= 2, got {self.train_steps!r}")

    @classmethod
    def from_dict(cls, options: dict) -> DDPMConfig:
        """Build from a recipe's ``model`` section (without ``name``), rejecting unknown keys.

        >>> DDPMConfig.from_dict({"schedule": "cosine", "unet": {"channels": 8}}).schedule
        'cosine'
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown deq_ddim model options {unknown}; known: {sorted(known)}")
        return cls(**options)


def ddpm_loss(eps_model, x0: torch.Tensor, abar: torch.Tensor, generator=None):
    """(prediction, noise) of one ε-prediction step on clean images ``x0``; their MSE is the loss.

    >>> net = UNet(1, UNetConfig(channels=8))
    >>> pred, eps = ddpm_loss(net, torch.zeros(3, 1, 8, 8), alpha_bars("linear", 100))
    >>> pred.shape == eps.shape == (3, 1, 8, 8)
    True
    """
    t = torch.randint(0, len(abar), (x0.shape[0],), device=x0.device, generator=generator)
    eps = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
    a = abar.to(x0.device, x0.dtype)[t].view(-1, *([1] * (x0.dim() - 1)))
    return eps_model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t), eps


class DDPM(nn.Module):
    """The trained denoiser: ``forward(images)`` returns ``((ε_θ, ε), None)`` for the trainer's
    ``generative`` task (no DEQ layer in training: the DEQ is in the sampler); ``eps(x, t)`` is
    the noise predictor the samplers call.

    >>> model = DDPM(1, DDPMConfig(train_steps=100, unet={"channels": 8}))
    >>> (pred, eps), sol = model((torch.zeros(2, 1, 8, 8), torch.zeros(2)))
    >>> pred.shape, sol
    (torch.Size([2, 1, 8, 8]), None)
    """

    def __init__(self, in_channels: int, config: DDPMConfig = DDPMConfig()):
        super().__init__()
        self.config = config
        self.net = UNet(in_channels, UNetConfig.from_dict(config.unet or {}))
        self.register_buffer(
            "abar", alpha_bars(config.schedule, config.train_steps, torch.float64), persistent=False
        )

    def eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ε_θ(x, t) for images x (B, C, H, W) and integer timesteps t (B,)."""
        return self.net(x, t)

    def forward(self, batch):
        """The ε-prediction pair for a batch of images (or an ``(images, labels)`` pair)."""
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return ddpm_loss(self.net, images, self.abar), None
