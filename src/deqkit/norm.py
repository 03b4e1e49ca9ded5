"""Weight norm and spectral norm on every linear/convolutional layer of a DEQ cell.

Both are registered through ``torch.nn.utils.parametrizations``, so the normalised weight is an
ordinary function of trainable tensors. A solve calls the cell tens of times; recomputing the
weight (and, for spectral norm, running power iteration) at every call would waste time and grow
the autograd graph, so :class:`~deqkit.DEQ` evaluates each parametrised weight once per call
inside :func:`cached_weights`. The cache lives for one call only: no manual reset is needed
between optimiser steps, and a second backward builds on fresh weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize

from ._compat import NORM_PARAMETRIZATIONS
from ._validate import check_choice, check_float, check_int

__all__ = ["apply_norm", "cached_weights", "remove_norm"]

NORM_KINDS = ("weight", "spectral")
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


class _Scale(nn.Module):
    """Multiplies a spectrally normalised weight by a fixed target norm (e.g. 0.97 < 1)."""

    def __init__(self, target: float):
        super().__init__()
        self.target = target

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.target

    def extra_repr(self) -> str:
        return f"target={self.target}"


def _is_ours(parametrization: nn.Module) -> bool:
    return isinstance(parametrization, (*NORM_PARAMETRIZATIONS, _Scale))


def _targets(module: nn.Module, skip: tuple[str, ...]) -> Iterator[tuple[str, nn.Module]]:
    for name, sub in module.named_modules():
        if not isinstance(sub, _LAYERS + _TRANSPOSED):
            continue
        if any(name == s or name.startswith(s + ".") for s in skip):
            continue
        yield name, sub


def apply_norm(
    module: nn.Module,
    kind: str = "weight",
    *,
    n_power_iterations: int = 1,
    target: float = 1.0,
    skip: Iterable[str] = (),
) -> nn.Module:
    """Reparametrise the weight of every Linear, Conv1d/2d/3d and ConvTranspose1d/2d/3d inside.

    Args:
        module: the module to change in place (e.g. a DEQ cell).
        kind: "weight" (w = g·v/‖v‖ per output unit, identical at initialisation) or
            "spectral" (w = target·W/σ(W), σ by power iteration in training mode).
        n_power_iterations: power-iteration steps per evaluation (spectral only).
        target: the spectral norm the weight is scaled to (spectral only; < 1 makes a linear
            layer contractive).
        skip: qualified names of submodules to leave alone (their children are skipped too).

    Returns:
        ``module`` itself, for chaining.

    >>> import deqkit as dk
    >>> cell = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 4))
    >>> cell = dk.apply_norm(cell, "spectral", target=0.9, n_power_iterations=20)
    >>> round(torch.linalg.matrix_norm(cell[0].weight, 2).item(), 2)
    0.9
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    check_choice("kind", kind, NORM_KINDS)
    check_int("n_power_iterations", n_power_iterations, minimum=1)
    check_float("target", target, minimum=0.0, strict_min=True)
    if isinstance(skip, str):
        raise TypeError(f"skip must be an iterable of module names, got the string {skip!r}")
    skip = tuple(skip)
    for name, layer in list(_targets(module, skip)):
        if parametrize.is_parametrized(layer, "weight"):
            raise ValueError(
                f"layer {name or type(layer).__name__!r} already has a weight parametrization; "
                "call remove_norm first"
            )
        out_dim = 1 if isinstance(layer, _TRANSPOSED) else 0
        if kind == "weight":
            parametrizations.weight_norm(layer, "weight", dim=out_dim)
        else:
            parametrizations.spectral_norm(
                layer, "weight", n_power_iterations=n_power_iterations, dim=out_dim
            )
            if target != 1.0:
                parametrize.register_parametrization(layer, "weight", _Scale(float(target)))
    return module


def remove_norm(module: nn.Module) -> nn.Module:
    """Bake normalised weights back into plain parameters (undoes :func:`apply_norm`).

    Layers whose weight carries parametrizations other than deqkit's norms are left alone.

    Returns:
        ``module`` itself; its outputs are unchanged.

    >>> import deqkit as dk
    >>> lin = dk.apply_norm(torch.nn.Linear(3, 2))
    >>> w = lin.weight.detach().clone()
    >>> lin = dk.remove_norm(lin)
    >>> type(lin).__name__, torch.allclose(lin.weight, w)
    ('Linear', True)
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    for _, layer in list(_targets(module, ())):
        if not parametrize.is_parametrized(layer, "weight"):
            continue
        chain: Any = layer.parametrizations["weight"]  # type: ignore[index]
        if all(_is_ours(p) for p in chain):
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    return module


@contextlib.contextmanager
def cached_weights(*modules: nn.Module) -> Iterator[None]:
    """Evaluate every parametrised tensor of ``modules`` once and reuse it until exit.

    The weights are computed on entry under the caller's grad mode, so they carry their graph
    even when a solver later calls the cell under ``torch.no_grad()``. :class:`~deqkit.DEQ`
    uses this around each call; wrap :func:`~deqkit.fixed_point` in it when f closes over
    normalised modules.

    >>> import deqkit as dk
    >>> lin = dk.apply_norm(torch.nn.Linear(3, 3), "spectral", target=0.5)
    >>> with dk.cached_weights(lin):
    ...     z, sol = dk.fixed_point(lambda z: torch.tanh(lin(z)), torch.zeros(2, 3))
    >>> sol.status.name
    'CONVERGED'
    """
    with parametrize.cached():
        for module in modules:
            if not isinstance(module, nn.Module):
                continue
            for sub in module.modules():
                if parametrize.is_parametrized(sub):
                    chains: Any = sub.parametrizations
                    for name in chains:
                        getattr(sub, name)
        yield
