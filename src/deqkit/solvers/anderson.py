"""Anderson acceleration (type II), regularised and safeguarded.

Each step mixes the last ``m`` iterates with weights α (Σα = 1) minimising ‖Σ αᵢ gᵢ‖, where
gᵢ = f(xᵢ) − xᵢ (Walker & Ni, SIAM J. Numer. Anal. 2011). The small Gram system is kept up to
date incrementally (one new row per step), regularised relative to its own scale so that a
nearly collinear history cannot blow up, and solved in float64; a sample whose system is still
singular falls back to a plain damped step instead of producing NaN.

For CPU states the m × m systems are solved on the host with NumPy: a batched LAPACK call through
PyTorch, plus the dozen tiny tensor operations around it, costs more than a whole pass over the
state on a CPU. On other devices, and when autograd records the solve (unrolled backward), the
same arithmetic runs in PyTorch on the device (so that gradients flow through the weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..core.options import AndersonOptions
from ._buffers import history_buffer, recording, release, write_slot
from ._cpu import host_side
from .base import Evaluate, Solver


@dataclass(frozen=True)
class Anderson(AndersonOptions, Solver):
    """Anderson acceleration.

    Args:
        m: history size (number of past iterates mixed).
        lam: Tikhonov regularisation of the Gram matrix, relative to its smallest diagonal
            entry (the squared norm of the smallest residual in the history).
        damping: τ in (0, 1]; the new iterate is Σα((1 − τ)xᵢ + τ f(xᵢ)).

    >>> import deqkit as dk
    >>> A = 0.9 * torch.eye(4)
    >>> f = lambda z: z @ A.T + 1.0
    >>> sol = dk.solve(f, torch.zeros(1, 4), solver=dk.Anderson(m=3), tol=1e-8)
    >>> sol.status.name, round(sol.z[0, 0].item(), 5), sol.nfev < 10
    ('CONVERGED', 10.0, True)
    """

    name: ClassVar[str] = "anderson"

    def init(self, z: torch.Tensor, fz: torch.Tensor):
        batch = z.shape[0]
        # The history keeps gᵢ = f(xᵢ) − xᵢ and yᵢ = xᵢ + τgᵢ, so that mixing is a single pass
        # (Σαᵢyᵢ) and the ring buffer is never reordered: the weights are computed on the Gram
        # matrix in slot order, which permutes α along with the slots. Unwritten slots are never
        # read, so the buffers start uninitialised.
        ys, gs = history_buffer(z, self.m), history_buffer(z, self.m)
        gram: torch.Tensor | np.ndarray  # NumPy on the host for CPU states (see the docstring)
        if recording(z, fz) or not host_side(z.device):
            gram = z.new_zeros(batch, self.m, self.m)
        else:
            gram = np.zeros((batch, self.m, self.m))
        return self._push((ys, gs, gram, 0), z, fz)

    def residual(self, memory):
        gs, count = memory[1], memory[3]
        return gs[:, (count - 1) % self.m]

    def release(self, memory):
        release(memory[0], memory[1])

    def _push(self, memory, x, fx):
        ys, gs, gram, count = memory
        slot = count % self.m
        filled = min(count + 1, self.m)
        if recording(gs, fx, x):
            g = fx - x
            gs = write_slot(gs, slot, g)
        else:
            # Straight into the ring buffer: no temporary, one pass fewer.
            g = torch.sub(fx, x, out=gs[:, slot])
        ys = write_slot(ys, slot, fx if self.damping == 1.0 else torch.lerp(x, fx, self.damping))
        # Row-vector form: on CPU 2x faster than bmm(gs, g[:, :, None]).
        row = torch.bmm(g.unsqueeze(1), gs[:, :filled].transpose(1, 2)).squeeze(1)
        if isinstance(gram, np.ndarray):
            host_row = row.to("cpu", torch.float64).numpy()
            gram[:, slot, :filled] = host_row
            gram[:, :filled, slot] = host_row
        else:
            gram = gram.clone()
            gram[:, slot, :filled] = row
            gram[:, :filled, slot] = row
        return ys, gs, gram, count + 1

    def step(self, evaluate: Evaluate, z, fz, memory, active):
        ys, gs, gram, count = memory
        k = min(count, self.m)
        if k == 1:
            z_new = torch.lerp(z, fz, self.damping) if self.damping != 1.0 else fz
        else:
            # Until the ring wraps, slots 0..k-1 hold the history; afterwards all m slots do.
            newest = (count - 1) % self.m
            if isinstance(gram, np.ndarray):
                host_alpha = _host_weights(gram[:, :k, :k], newest, self.lam)
                alpha = torch.from_numpy(host_alpha).to(device=ys.device, dtype=ys.dtype)
            else:
                alpha = _torch_weights(gram[:, :k, :k], newest, self.lam)
            z_new = torch.bmm(alpha.unsqueeze(1), ys[:, :k]).squeeze(1)
        fz_new = evaluate(z_new)
        return z_new, fz_new, self._push(memory, z_new, fz_new)


def _host_weights(gram: np.ndarray, newest: int, lam: float) -> np.ndarray:
    """α (B, k) from the Gram matrices (B, k, k), in float64 on the host."""
    batch, k, _ = gram.shape
    scale = np.maximum(gram.diagonal(axis1=1, axis2=2).min(axis=1), np.finfo(np.float64).tiny)
    system = gram + (lam * scale)[:, None, None] * np.eye(k)
    with np.errstate(all="ignore"):
        try:
            alpha = np.linalg.solve(system, np.ones((batch, k, 1)))[..., 0]
        except np.linalg.LinAlgError:  # some sample's system is singular: solve one by one
            alpha = np.full((batch, k), np.nan)
            for i in range(batch):
                try:
                    alpha[i] = np.linalg.solve(system[i], np.ones(k))
                except np.linalg.LinAlgError:
                    pass
        alpha = alpha / alpha.sum(axis=1, keepdims=True)
    # A zero sum gives Inf/NaN, so finiteness also covers it.
    ok = np.isfinite(alpha).all(axis=1)
    if not ok.all():
        alpha[~ok] = 0.0
        alpha[~ok, newest] = 1.0
    return alpha


def _torch_weights(gram: torch.Tensor, newest: int, lam: float) -> torch.Tensor:
    """α (B, k) from the Gram matrices, differentiable (used while autograd records)."""
    k = gram.shape[-1]
    work = gram if gram.dtype in (torch.float32, torch.float64) else gram.float()
    scale = work.diagonal(dim1=1, dim2=2).amin(dim=1).clamp_min(torch.finfo(work.dtype).tiny)
    eye = torch.eye(k, dtype=work.dtype, device=work.device)
    system = work + (lam * scale)[:, None, None] * eye
    ones = torch.ones(work.shape[0], k, 1, dtype=work.dtype, device=work.device)
    with torch.no_grad():  # the weights, and which samples' systems give finite ones
        y, info = torch.linalg.solve_ex(system, ones)
        alpha = y.squeeze(2) / y.sum(dim=1)
        ok = (info == 0) & torch.isfinite(alpha).all(dim=1)
    if system.requires_grad:
        # Solve again on the graph with the failing samples' systems replaced by I: an Inf in the
        # branch torch.where discards would still reach the gradient as 0 · Inf = NaN (a history
        # of exactly zero residuals, i.e. exact convergence, under the unrolled backward).
        y = torch.linalg.solve(torch.where(ok[:, None, None], system, eye), ones).squeeze(2)
        alpha = y / y.sum(dim=1, keepdim=True)
    fallback = torch.zeros_like(alpha)
    fallback[:, newest] = 1.0
    return torch.where(ok[:, None], alpha, fallback).to(gram.dtype)
