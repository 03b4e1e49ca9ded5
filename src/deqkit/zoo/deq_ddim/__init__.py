"""DEQ-DDIM: diffusion sampling as one joint fixed point over all DDIM states, solved with
Anderson (Pokle, Geng, Kolter, "Deep Equilibrium Approaches to Diffusion Models", NeurIPS 2022),
with a small UNet denoiser trained here by DDPM ε-prediction."""

from __future__ import annotations

from .analytic import GaussianEps
from .ddpm import DDPM, DDPMConfig, ddpm_loss
from .inversion import Inversion, inversion_map, invert
from .model_inversion import METHODS, InversionOptions, InversionRun, invert_model, reconstruct
from .sampler import (
    CRITERIA,
    DEQSample,
    StateAnderson,
    ddim_chain,
    ddim_sample,
    deq_sample,
    draw_noise,
    joint_map,
)
from .schedule import SCHEDULES, DDIMSteps, alpha_bars, betas, ddim_steps
from .unet import UNet, UNetConfig

#: The DEQ sampler is not a ``dk.DEQ`` layer: ``deqkit diagnose`` points here for its health check.
DIAGNOSE_COMMAND = "python -m deqkit.zoo.deq_ddim.diagnose"

__all__ = [
    "CRITERIA",
    "DDIMSteps",
    "DDPM",
    "DDPMConfig",
    "DEQSample",
    "GaussianEps",
    "Inversion",
    "InversionOptions",
    "InversionRun",
    "METHODS",
    "SCHEDULES",
    "StateAnderson",
    "TASK",
    "UNet",
    "UNetConfig",
    "alpha_bars",
    "betas",
    "build",
    "ddim_chain",
    "ddim_sample",
    "ddim_steps",
    "ddpm_loss",
    "deq_sample",
    "draw_noise",
    "inversion_map",
    "invert",
    "invert_model",
    "joint_map",
    "reconstruct",
]

#: The denoiser is trained by the trainer's ``generative`` task: the model returns (ε_θ, ε).
TASK = "generative"


def build(model_cfg: dict, deq_options: dict, data_info: dict) -> DDPM:
    """The DDPM denoiser from a recipe's ``model`` section; ``deq_options`` are unused in
    training (the DEQ is the sampler's, see :func:`deq_sample`).

    >>> model = build({"name": "deq_ddim", "unet": {"channels": 8}}, {}, {"in_channels": 1})
    >>> type(model).__name__
    'DDPM'
    """
    if "in_channels" not in data_info:
        raise ValueError(f"data_info lacks 'in_channels'; got keys {sorted(data_info)}")
    config = DDPMConfig.from_dict({k: v for k, v in model_cfg.items() if k != "name"})
    return DDPM(data_info["in_channels"], config)
