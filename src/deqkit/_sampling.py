"""Intermediate states for fixed-point correction: where to sample them, how they get gradients.

``DEQ(..., n_states=k)`` samples k states at evenly spaced iterations ending at ``max_iter``. The
last one is always the layer's own output z* with the layer's backward (e.g. the implicit
gradient), whether or not the solver ran that far: a solve that converges early must not lose
its main gradient. Earlier points the solve never reached are filled with z* as well, so there
are always k states. Reached intermediate states get a cheap gradient of their own: the layer's
backward when it is a phantom or one-step gradient, a one-step gradient otherwise (an implicit
solve per state would multiply the backward cost by k for an approximate target anyway).
"""

from __future__ import annotations

import torch

from ._validate import check_int
from .backward import Backward, OneStep, Phantom

__all__ = ["attach_states", "sample_points"]


def sample_points(n_states: int, max_iter: int) -> list[int]:
    """Iterations at which the k states are taken: evenly spaced, the last at ``max_iter``.

    >>> sample_points(3, 10), sample_points(2, 24), sample_points(1, 5)
    ([3, 6, 10], [12, 24], [5])
    """
    check_int("n_states", n_states, minimum=1)
    if n_states > max_iter:
        raise ValueError(f"n_states ({n_states}) must not exceed max_iter ({max_iter})")
    return [(max_iter * (i + 1)) // n_states for i in range(n_states)]


def attach_states(
    strategy: Backward,
    f,
    sampled: list[torch.Tensor],
    z_out: torch.Tensor,
    n_states: int,
    solution,
    on_failure: str,
) -> list[torch.Tensor]:
    """Return k flat states: the reached samples with their gradients, then z_out repeated."""
    reached = sampled[: n_states - 1]
    if strategy.unrolls_solver or not torch.is_grad_enabled():
        states = list(reached)
    else:
        cheap = strategy if isinstance(strategy, (Phantom, OneStep)) else OneStep()
        states = [cheap.attach(f, s, solution, on_failure) for s in reached]
    return states + [z_out] * (n_states - len(states))
