"""Fixed-point correction: supervise several states along the solver path, not only z*.

Bai, Geng, Kolter, Koltun ("Deep Equilibrium Optical Flow Estimation", CVPR 2022) add the task
loss of k intermediate states, weighted γ^(k−1−i) so the last (equilibrium) state weighs most.
The extra supervision pushes f towards reaching its fixed point in few steps. The states come
from ``DEQ(..., n_states=k)`` as ``sol.outputs.states``, each carrying its own gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ._compat import pytree
from ._validate import check_float

__all__ = ["fixed_point_correction", "skip_loss"]


def fixed_point_correction(
    criterion: Callable[[Any, Any], torch.Tensor],
    states: Sequence[Any],
    target: Any,
    gamma: float = 0.8,
) -> torch.Tensor:
    """Σᵢ γ^(k−1−i) · criterion(states[i], target) over the k sampled states.

    Args:
        criterion: loss called as ``criterion(state, target)``, returning a scalar tensor
            (apply the model head inside it when the loss is on predictions, not states).
        states: the k states, first to last (``sol.outputs.states``).
        target: passed unchanged to every criterion call.
        gamma: decay in (0, 1]; 1 weighs every state equally.

    Returns:
        The weighted sum (not normalised by the weights: with k = 1 it is the plain loss).

    >>> import deqkit as dk
    >>> states = [torch.tensor([1.0]), torch.tensor([3.0])]
    >>> mse = torch.nn.functional.mse_loss
    >>> dk.fixed_point_correction(mse, states, torch.tensor([3.0]), gamma=0.5).item()  # 0.5*4 + 0
    2.0
    """
    if not callable(criterion):
        raise TypeError(f"criterion must be callable, got {type(criterion).__name__}")
    check_float("gamma", gamma, minimum=0.0, maximum=1.0, strict_min=True)
    if isinstance(states, torch.Tensor) or not isinstance(states, Sequence) or not states:
        raise ValueError(
            "states must be a non-empty list of states (sol.outputs.states from "
            f"DEQ(..., n_states=k)), got {type(states).__name__}"
        )
    k = len(states)
    total: torch.Tensor | None = None
    for i, state in enumerate(states):
        loss = criterion(state, target)
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise ValueError(f"criterion must return a scalar tensor, got {loss!r:.80}")
        term = loss * gamma ** (k - 1 - i)
        total = term if total is None else total + term
    assert total is not None  # states is non-empty
    return total


def skip_loss(z0: Any, z_star: Any) -> torch.Tensor:
    """Skip-DEQ loss: mean over batch and elements of (z0 − z*)², with z* held constant.

    Trains the explicit network that proposed z0 to predict the fixed point (Pal, Edelman,
    Rackauckas, "Mixing Implicit and Explicit Deep Learning with Skip DEQs", 2022), so later
    solves start close to z* and take fewer iterations.

    >>> skip_loss(torch.zeros(2, 2), torch.ones(2, 2)).item()
    1.0
    """
    z0_leaves, z0_spec = pytree.tree_flatten(z0)
    star_leaves, star_spec = pytree.tree_flatten(z_star)
    if z0_spec != star_spec:
        raise ValueError(f"z0 and z* differ in structure: {z0_spec} vs {star_spec}")
    total = sum(
        (a - b.detach()).square().sum() for a, b in zip(z0_leaves, star_leaves, strict=True)
    )
    return total / sum(leaf.numel() for leaf in z0_leaves)
