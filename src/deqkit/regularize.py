"""Jacobian diagnostics and regularisation at the fixed point.

* :func:`jacobian_penalty` -- Hutchinson estimate of ‖J_f(z*)‖²_F / D, differentiable, to add to
  the training loss (Bai, Koltun, Kolter, "Stabilizing Equilibrium Models by Jacobian
  Regularization", ICML 2021). A small Frobenius norm keeps f contractive near z*, so solves stay
  short and stable as training goes on.
* :func:`spectral_radius` -- power iteration on J_f(z*): a value near or above 1 warns that the
  forward and backward solves will struggle.

Both work on tensor or pytree states (batch in dim 0) and use vector–Jacobian products only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ._validate import check_bool, check_choice, check_int
from .state import StateSpec, flatten

__all__ = ["jacobian_penalty", "spectral_radius"]


def _flat_problem(f: Callable[[Any], Any], z: Any) -> tuple[torch.Tensor, torch.Tensor]:
    flat, spec = flatten(z, "z")
    z_leaf = flat.detach().requires_grad_()
    fz = _evaluate(f, spec, z_leaf)
    return z_leaf, fz


def _evaluate(f: Callable[[Any], Any], spec: StateSpec, z_flat: torch.Tensor) -> torch.Tensor:
    return spec.flatten_like(f(spec.unflatten(z_flat)), "f(z)", cast=True)


def jacobian_penalty(
    f: Callable[[Any], Any],
    z: Any,
    *,
    vecs: int = 1,
    reduction: str = "mean",
    create_graph: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Hutchinson estimate of ‖∂f/∂z‖²_F at ``z``, divided by the state size D.

    For v ~ N(0, I), E‖vᵀJ‖² = ‖J‖²_F; the estimate averages ``vecs`` draws per sample. It is
    differentiable (``create_graph=True``) with respect to everything f uses, never ``z``.

    Args:
        f: the map, e.g. ``lambda z: cell(z, x)``; tensor or pytree states.
        z: the point, usually the fixed point (it is detached).
        vecs: random probe vectors per sample.
        reduction: "mean" (a scalar: batch mean) or "none" (one value per sample).
        create_graph: keep the graph so the penalty can be backpropagated.
        generator: optional random generator for reproducible probes.

    Returns:
        The penalty, a scalar or a (B,) tensor.

    >>> import deqkit as dk
    >>> A = torch.tensor([[0.6, 0.0], [0.0, 0.8]])
    >>> est = dk.jacobian_penalty(lambda z: z @ A.T, torch.zeros(20000, 2))
    >>> round(est.item(), 1)  # (0.36 + 0.64) / 2
    0.5
    """
    check_int("vecs", vecs, minimum=1)
    check_choice("reduction", reduction, ("mean", "none"))
    check_bool("create_graph", create_graph)
    with torch.enable_grad():
        z_leaf, fz = _flat_problem(f, z)
        if not fz.requires_grad:
            raise ValueError("f(z) does not depend on z, so its Jacobian is zero; check f")
        total = fz.new_zeros(fz.shape[0])
        for i in range(vecs):
            probe = torch.randn(fz.shape, generator=generator, dtype=fz.dtype, device=fz.device)
            (vjp,) = torch.autograd.grad(
                fz,
                z_leaf,
                probe,
                create_graph=create_graph,
                # the double-backward graph of the penalty reuses f's saved tensors
                retain_graph=create_graph or i < vecs - 1,
            )
            total = total + vjp.square().sum(dim=1)
    per_sample = total / (vecs * fz.shape[1])
    return per_sample.mean() if reduction == "mean" else per_sample


def spectral_radius(
    f: Callable[[Any], Any],
    z: Any,
    *,
    n_iter: int = 50,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-sample spectral radius of ∂f/∂z at ``z`` by power iteration (no gradient).

    Iterates v ← Jᵀv / ‖Jᵀv‖ (Jᵀ has the spectrum of J) and returns the geometric mean of the
    growth factors ‖Jᵀv‖ over the second half of the iterations, which also converges when the
    dominant eigenvalues are a complex pair.

    Args:
        f: the map; tensor or pytree states.
        z: the point, usually the fixed point.
        n_iter: power-iteration steps (one vector–Jacobian product each).
        generator: optional random generator for the start vector.

    Returns:
        A (B,) tensor of spectral-radius estimates.

    >>> import deqkit as dk
    >>> A = torch.tensor([[0.5, 0.2], [0.0, -0.9]])
    >>> rho = dk.spectral_radius(lambda z: z @ A.T, torch.zeros(3, 2))
    >>> [round(r, 3) for r in rho.tolist()]
    [0.9, 0.9, 0.9]
    """
    check_int("n_iter", n_iter, minimum=2)
    with torch.enable_grad():
        z_leaf, fz = _flat_problem(f, z)
        if not fz.requires_grad:
            return fz.new_zeros(fz.shape[0]).detach()
        v = torch.randn(fz.shape, generator=generator, dtype=fz.dtype, device=fz.device)
        v = v / torch.linalg.vector_norm(v, dim=1, keepdim=True)
        tiny = torch.finfo(fz.dtype).tiny
        log_growth = []
        for _ in range(n_iter):
            (w,) = torch.autograd.grad(fz, z_leaf, v, retain_graph=True)
            norm = torch.linalg.vector_norm(w, dim=1, keepdim=True)
            log_growth.append(norm.squeeze(1).clamp_min(tiny).log())
            v = w / norm.clamp_min(tiny)
    tail = torch.stack(log_growth[n_iter // 2 :], dim=1)
    return tail.mean(dim=1).exp().detach()
