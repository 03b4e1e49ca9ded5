"""DEQ-MFN implicit neural representations, their explicit MFN baseline, and amortised training.

:class:`DEQINR` solves z* = f(z*; g(x)) per coordinate with :class:`~deqkit.DEQ` and reads the
value out linearly. **Amortisation** ((Implicit)², Huang, Bai, Kolter, NeurIPS 2021): the signal
is the whole data set, so every coordinate comes back at every step; its last state is kept in a
:class:`~deqkit.FixedPointCache` keyed by coordinate index. Once every coordinate has a cached
state, a training step does not solve: it applies f ``amortize_steps`` times to the cached state
(differentiated through, i.e. the Jacobian-free one-step gradient for one step) and writes the
result back, so training costs about one f per step and the state tracks the moving fixed point.
With ``amortize_neumann: 1`` that one application gets (Implicit)²'s one-step gradient I + Jᵀ
(:mod:`.amortize`) instead of the Jacobian-free I.
Steps that solve (the first, or all with ``amortize=False``) use the DEQ's configured backward
(one-step, phantom or implicit). Evaluation always solves from zeros, so the reported residual
and iterations are those of a genuine solve, separate from the (non-equilibrium) training state.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import deqkit as dk

from .amortize import neumann_step
from .cell import MFNCell
from .clamp import apply_clamped_spectral_norm
from .filters import FILTERS, FilterBank

__all__ = ["DEQINR", "ExplicitMFN", "INRConfig", "count_parameters"]


#: How spectral norm meets its target (:class:`INRConfig` ``norm_mode``).
NORM_MODES = ("scale", "clamp")

_ARTICLE = {int: "an int", float: "a float", bool: "a bool"}


def _check(name: str, value: Any, kind: type, minimum: float | None = None) -> None:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
        raise TypeError(f"INRConfig.{name} must be {_ARTICLE[kind]}, got {value!r}")
    if minimum is not None and not value >= minimum:
        raise ValueError(f"INRConfig.{name} must be >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class INRConfig:
    """Architecture and training-mode options (the recipe's ``model`` section).

    Args:
        filter: "fourier" or "gabor".
        width: hidden units D.
        layers: L, multiplicative layers inside f (1 or 4 in the paper; any L >= 1 works).
        input_scale: frequency scale of the filters (about the image side in pixels).
        alpha: Gabor envelope prior shape.
        explicit: build the explicit MFN baseline (one pass from z = 0, no solve) instead.
        spectral_norm: spectral norm on the L linear maps, scaled to ``norm_target``.
        norm_target: the spectral norm target (0.97 in the paper).
        norm_mode: "scale" (the toolkit's spectral norm: σ(W) = norm_target exactly) or
            "clamp" (the (Implicit)² code: σ(W) capped at norm_target, :mod:`.clamp`).
        power_iterations: power-iteration steps per weight evaluation (5 in the paper).
        amortize: reuse each coordinate's cached state across training steps (DEQ only).
        amortize_steps: f applications per amortised training step.
        amortize_neumann: k ≥ 1 gives the (single) amortised application the gradient
            u + Jᵀu + … + (Jᵀ)ᵏu, k = 1 being (Implicit)²'s one-step backward
            (:mod:`.amortize`, k vector–Jacobian products per step); 0 (default) the
            Jacobian-free gradient of the ``amortize_steps`` unrolled applications.

    >>> INRConfig(width=32).layers
    1
    >>> INRConfig.from_dict({"width": 32, "depth": 2})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown model option(s) ['depth']; valid: ['alpha', 'amortize', ...]
    """

    filter: str = "fourier"
    width: int = 256
    layers: int = 1
    input_scale: float = 256.0
    alpha: float = 6.0
    explicit: bool = False
    spectral_norm: bool = True
    norm_target: float = 0.97
    norm_mode: str = "scale"
    power_iterations: int = 5
    amortize: bool = True
    amortize_steps: int = 1
    amortize_neumann: int = 0

    def __post_init__(self):
        if self.filter not in FILTERS:
            raise ValueError(f"INRConfig.filter must be one of {FILTERS}, got {self.filter!r}")
        if self.norm_mode not in NORM_MODES:
            raise ValueError(
                f"INRConfig.norm_mode must be one of {NORM_MODES}, got {self.norm_mode!r}"
            )
        for name in ("width", "layers", "power_iterations", "amortize_steps"):
            _check(name, getattr(self, name), int, 1)
        for name in ("input_scale", "alpha", "norm_target"):
            _check(name, getattr(self, name), float)
            if not getattr(self, name) > 0 or getattr(self, name) == float("inf"):
                raise ValueError(
                    f"INRConfig.{name} must be finite and > 0, got {getattr(self, name)!r}"
                )
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("explicit", "spectral_norm", "amortize"):
            _check(name, getattr(self, name), bool)
        _check("amortize_neumann", self.amortize_neumann, int, 0)
        if self.amortize_neumann and self.amortize_steps != 1:
            raise ValueError(
                "INRConfig.amortize_neumann needs amortize_steps: 1 (it shapes the gradient of "
                f"one application), got amortize_steps={self.amortize_steps}"
            )

    @classmethod
    def from_dict(cls, options: dict) -> INRConfig:
        """Build from a dict, rejecting unknown keys with the list of valid ones."""
        valid = sorted(f.name for f in dataclasses.fields(cls))
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ValueError(f"unknown model option(s) {unknown}; valid: {valid}")
        return cls(**options)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars (spectral-norm power-iteration vectors are buffers, not counted).

    >>> count_parameters(torch.nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class _MFNParts(nn.Module):
    """Filters, the MFN linear maps and the linear read-out shared by both models."""

    def __init__(self, config: INRConfig, in_features: int, out_features: int):
        super().__init__()
        self.config = config
        self.filters = FilterBank(
            config.filter, in_features, config.width, config.layers, config.input_scale,
            config.alpha,
        )  # fmt: skip
        self.cell = MFNCell(config.width, config.layers)
        if config.spectral_norm and config.norm_mode == "clamp":
            apply_clamped_spectral_norm(self.cell, config.norm_target, config.power_iterations)
        elif config.spectral_norm:
            dk.apply_norm(
                self.cell, "spectral", target=config.norm_target,
                n_power_iterations=config.power_iterations,
            )  # fmt: skip
        self.readout = nn.Linear(config.width, out_features)


class ExplicitMFN(_MFNParts):
    """The explicit L-layer MFN: f applied once from z = 0, then the linear read-out.

    It has exactly the parameters of :class:`DEQINR` with the same options, so it is the
    equal-size baseline. ``forward`` returns ``(values, None)`` (no solver involved).

    >>> net = ExplicitMFN(INRConfig(width=16, spectral_norm=False, explicit=True), 2, 1)
    >>> values, solution = net(torch.rand(5, 2) * 2 - 1)
    >>> values.shape, solution
    (torch.Size([5, 1]), None)
    """

    def forward(self, coords: torch.Tensor, index: torch.Tensor | None = None):
        g = self.filters(coords)
        return self.readout(self.cell(self.cell.initial_state(g), g)), None


class DEQINR(_MFNParts):
    """DEQ-MFN: the per-coordinate fixed point of the MFN map, read out linearly.

    Args:
        config: :class:`INRConfig`.
        in_features: coordinate dimension d.
        out_features: value channels C.
        num_points: number of coordinates of the signal (the size of the amortisation cache).
        **deq_options: keyword arguments of :class:`~deqkit.DEQ` (solver, backward, tol, ...).

    ``forward(coords, index=None)`` returns ``(values, solution)``. In training mode with grad
    enabled and ``index`` (the coordinates' sample indices) given, amortisation is used as the
    module docstring says; otherwise it solves from zeros.

    >>> net = DEQINR(INRConfig(width=16), 2, 1, num_points=5, tol=1e-4, max_iter=50)
    >>> coords, index = torch.rand(5, 2) * 2 - 1, torch.arange(5)
    >>> _, first = net(coords, index)       # the first step solves
    >>> _, second = net(coords, index)      # then one f per step on the cached states
    >>> first.nfev > 1, second.nfev
    (True, 1)
    >>> _ = net.eval()
    >>> _, test = net(coords)               # evaluation always solves from zeros
    >>> test.status.name
    'CONVERGED'
    """

    def __init__(
        self,
        config: INRConfig,
        in_features: int,
        out_features: int,
        num_points: int,
        **deq_options: Any,
    ):
        super().__init__(config, in_features, out_features)
        self.deq = dk.DEQ(self.cell, **deq_options)
        self.cache = dk.FixedPointCache(num_points)

    def get_extra_state(self) -> dict:
        """The amortised states travel with the weights (checkpoints, ``--resume``): a resumed
        run then takes the same amortised step as the uninterrupted one. Only a complete cache
        is kept; a partial one (mini-batches within the first epoch) is rebuilt by solving."""
        if len(self.cache) < self.cache.size:
            return {}
        weight = self.readout.weight
        default = weight.new_zeros(self.cache.size, self.config.width)
        return {"amortized_states": self.cache.get(torch.arange(self.cache.size), default)}

    def set_extra_state(self, state: dict) -> None:
        """Restore the amortised states saved by :meth:`get_extra_state`."""
        self.cache.clear()
        if "amortized_states" in state:
            self.cache.put(torch.arange(self.cache.size), state["amortized_states"])

    def forward(self, coords: torch.Tensor, index: torch.Tensor | None = None):
        g = self.filters(coords)  # once per batch: every f application below reuses them
        if not (self.training and torch.is_grad_enabled() and index is not None):
            z, sol = self.deq(g)
            return self.readout(z), sol
        z0 = self.cache.get(index, default=self.cell.initial_state(g))
        amortized = self.config.amortize and len(self.cache) == self.cache.size
        if amortized and self.config.amortize_neumann:
            # (Implicit)²'s one-step backward on the cached states: one f, gradient (I + Jᵀ + …).
            z, sol = neumann_step(
                self.cell, z0, g, terms=self.config.amortize_neumann, tol=self.deq.tol,
                stop_mode=self.deq.stop_mode,
            )  # fmt: skip
        elif amortized:
            # The DEQ's weight-tied unroll from the cached states: amortize_steps applications
            # of f, differentiated through, no solve.
            previous = self.deq.pretrain_steps  # the trainer's own unrolled pretraining, if any
            self.deq.pretrain(self.config.amortize_steps)
            try:
                z, sol = self.deq(g, z0=z0)
            finally:
                self.deq.pretrain(previous)
        else:
            z, sol = self.deq(g, z0=z0)
        if self.config.amortize:
            self.cache.put(index, z)
        return self.readout(z), sol
