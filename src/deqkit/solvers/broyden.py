"""Limited-memory Broyden's method for the root of g(z) = f(z) − z.

The inverse Jacobian of g is kept as J⁻¹ ≈ −I + U Vᵀ with at most ``memory`` rank-one terms in a
ring buffer (Broyden 1965; the DEQ papers use the same form). Memory is fixed by the option, not
by max_iter, so long solves cost no more memory than short ones. Both of Broyden's secant updates
are available: "good" (his first method, the one the DEQ papers and TorchDEQ use) and "bad" (his
second method, the least change in J⁻¹), which skips two of the four products with U and V per
step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ..core.options import BroydenOptions
from ._buffers import history_buffer, recording, release, write_slot
from ._cpu import float_limits, host_side, to_host
from ._linesearch import bounded_step_search
from .base import Evaluate, Solver


@dataclass(frozen=True)
class BroydenState:
    """Broyden's final inverse-Jacobian estimate J_g⁻¹ ≈ −I + Σᵢ uᵢ vᵢᵀ of g(z) = f(z) − z, per
    sample (``us``, ``vs``: (B, rank, D), detached; (1, rank, B·D) after ``stop_scope="batch"``,
    which solves the batch as one system), as ``Solution.state`` hands it on.

    A sample that stopped early keeps the estimate it had when it stopped: later proposals for
    a frozen sample are not evaluated at the proposal, so their secant pairs would be wrong.
    """

    us: torch.Tensor
    vs: torch.Tensor

    @property
    def rank(self) -> int:
        return self.us.shape[1]

    def adjoint(self, grad: torch.Tensor) -> torch.Tensor:
        """Approximate solution u of u = grad + J_fᵀ u, i.e. u ≈ −J_g⁻ᵀ grad = grad − V (Uᵀ grad).

        >>> import deqkit as dk
        >>> sol = dk.solve(lambda z: 0.5 * z + 1.0, torch.zeros(2, 3), "broyden", tol=1e-8,
        ...                keep_state=True)
        >>> g = torch.ones(2, 3)  # the exact adjoint of f = 0.5 z + 1 is u = g / (1 - 0.5)
        >>> torch.allclose(sol.state.adjoint(g), 2 * g)
        True
        """
        if self.rank == 0:
            return grad
        us, vs = self.us.to(grad.dtype), self.vs.to(grad.dtype)
        # After stop_scope="batch" the estimate is one (1, rank, B·D) system for the whole batch.
        flat = grad.reshape(us.shape[0], -1)
        coeff = torch.bmm(us, flat.unsqueeze(2))
        return (flat - torch.bmm(vs.transpose(1, 2), coeff).squeeze(2)).reshape(grad.shape)


@dataclass(frozen=True)
class Broyden(BroydenOptions, Solver):
    """Limited-memory Broyden root finder.

    Args:
        memory: number of rank-one updates kept (oldest dropped first).
        line_search: per-sample backtracking on ‖f(z) − z‖ (costs extra f-evaluations).
        max_halvings: backtracking trials per step when ``line_search`` is on.
        update: "good" (v = J⁻ᵀΔz, Broyden's first method) or "bad" (v = Δg, his second
            method, cheaper per step).

    Converges where plain iteration diverges:

    >>> import deqkit as dk
    >>> sol = dk.solve(lambda z: -2.0 * z + 1.0, torch.zeros(2, 3), solver=dk.Broyden(), tol=1e-6)
    >>> sol.status.name, round(sol.z[0, 0].item(), 6)
    ('CONVERGED', 0.333333)
    """

    name: ClassVar[str] = "broyden"

    @property
    def mixes_rows(self) -> bool:
        """The per-sample line search mixes rows of its trial evaluations."""
        return self.line_search

    def init(self, z: torch.Tensor, fz: torch.Tensor):
        g = fz - z
        # Memory: U, V, the update count, g(z) and the next direction −J⁻¹g(z) for the current
        # z. Carrying the last two means a step passes over U and V four times, not six.
        # J⁻¹ = −I at the start, so the first direction is g itself. Unwritten slots of U and V
        # are never read, so they start uninitialised.
        us, vs = history_buffer(z, self.memory), history_buffer(z, self.memory)
        # The last slot caches the (active, frozen mask, frozen row indices) of the previous
        # step (see _frozen).
        return us, vs, 0, g, g, (None, None, None)

    def residual(self, memory):
        return memory[3]

    def release(self, memory):
        release(memory[0], memory[1])

    def final_state(self, memory) -> BroydenState:
        us, vs, count = memory[0], memory[1], memory[2]
        rank = min(count, self.memory)
        return BroydenState(us[:, :rank].detach(), vs[:, :rank].detach())

    # Products with the (B, k, D) memory are written with row vectors, (B, 1, ·) @ (B, ·, ·):
    # on CPU this runs 2-2.5x faster than the equivalent column form (B, ·, ·) @ (B, ·, 1).

    @staticmethod
    def _neg_inv_times(us, vs, k, x):
        """−J⁻¹ x = x − U (Vᵀ x)."""
        if k == 0:
            return x
        row = x.unsqueeze(1)
        coeff = torch.bmm(row, vs[:, :k].transpose(1, 2))
        return torch.baddbmm(row, coeff, us[:, :k], alpha=-1).squeeze(1)

    @staticmethod
    def _times_inv(us, vs, k, x):
        """xᵀ J⁻¹ = −xᵀ + (xᵀ U) Vᵀ."""
        if k == 0:
            return -x
        row = x.unsqueeze(1)
        coeff = torch.bmm(row, us[:, :k].transpose(1, 2))
        return torch.baddbmm(row, coeff, vs[:, :k], beta=-1).squeeze(1)

    def step(self, evaluate: Evaluate, z, fz, memory, active):
        us, vs, count, g, direction, seen = memory
        k = min(count, self.memory)
        if self.line_search:
            z_new, fz_new = bounded_step_search(
                evaluate, z, fz, direction, active, self.max_halvings
            )
            dz = z_new - z
        else:
            z_new = z + direction
            fz_new = evaluate(z_new)
            dz = direction
        g_new = fz_new - z_new
        dg = g_new - g
        # With H ≈ J⁻¹ the update is H += u vᵀ with u = (dz − H dg) / (vᵀdg), where v = Hᵀdz
        # ("good", Broyden's first method) or v = dg ("bad", his second method). Since
        # direction = −H g, H dg = H g_new + direction; writing d = −H g_new, the numerator is
        # dz − direction + d, and the next direction is −(H + u vᵀ) g_new.
        d = self._neg_inv_times(us, vs, k, g_new)
        numer = d if dz is direction else d + (dz - direction)
        slot = count % self.memory
        full = count >= self.memory
        # The per-sample scalars go to the host in one copy; the rest of the logic is NumPy.
        if self.update == "good":
            v = self._times_inv(us, vs, k, dz)
            dots = [torch.linalg.vecdot(v, dg), torch.linalg.vecdot(v, g_new)]
            dots += [torch.linalg.vector_norm(dz, dim=1), torch.linalg.vector_norm(dg, dim=1)]
        else:
            v = dg
            dots = [torch.linalg.vector_norm(dg, dim=1), torch.linalg.vecdot(dg, g_new)]
        if full:  # the term in the slot about to be overwritten leaves the estimate
            dots.append(torch.linalg.vecdot(vs[:, slot], g_new))
        usable, coeffs = _scalars(self.update, dots, full)
        # A sample no longer active keeps its estimate (its secant pair would be wrong): its
        # slot keeps the old term once the ring is full, and stays empty (zero) before that.
        seen = _frozen(active, seen)
        frozen = seen[1]
        if recording(numer, v, dg, us, vs) or not isinstance(usable, np.ndarray):
            # Unrolled backward (differentiable through 1 / (vᵀdg)) or device arithmetic.
            keep = _as_tensor(usable, z.device)[:, None]
            denom_t = dots[0] if self.update == "good" else dots[0].square()
            inv_denom = keep.to(v.dtype) / torch.where(keep, denom_t[:, None], 1.0)
            u = torch.where(keep, numer * inv_denom, 0.0)
            v = torch.where(keep, v, 0.0)
            next_direction = d - u * (v * g_new).sum(dim=1, keepdim=True)
            if full:
                next_direction = next_direction + us[:, slot] * dots[-1][:, None]
            if frozen is not None:
                u = torch.where(frozen, us[:, slot] if full else 0.0, u)
                v = torch.where(frozen, vs[:, slot] if full else 0.0, v)
            us, vs = write_slot(us, slot, u), write_slot(vs, slot, v)
            return z_new, fz_new, (us, vs, count + 1, g_new, next_direction, seen)
        factors = torch.from_numpy(np.stack(coeffs)).to(z.device, z.dtype)[:, :, None]
        next_direction = torch.addcmul(d, numer, factors[1])
        if full:
            next_direction.addcmul_(us[:, slot], factors[2])
        u_slot, v_slot = us[:, slot], vs[:, slot]
        if frozen is None:
            torch.mul(numer, factors[0], out=u_slot)  # u, straight into its slot
            v_slot.copy_(v)
        elif full:  # frozen rows keep their term: one select per buffer, in place
            torch.where(frozen, u_slot, numer * factors[0], out=u_slot)
            torch.where(frozen, v_slot, v, out=v_slot)
        else:  # frozen rows stay empty (filled by index: a (B, 1) mask fill is a scalar loop)
            rows = seen[2]
            torch.mul(numer, factors[0], out=u_slot).index_fill_(0, rows, 0.0)
            v_slot.copy_(v).index_fill_(0, rows, 0.0)
        if not usable.all():  # no update for these samples: no NaN/Inf may enter U Vᵀ
            rows = usable if frozen is None else usable | ~active.cpu().numpy()
            keep = torch.from_numpy(rows).to(z.device)[:, None]
            vs[:, slot] = torch.where(keep, v_slot, 0.0)
            us[:, slot] = torch.where(keep, u_slot.nan_to_num(), 0.0)
        return z_new, fz_new, (us, vs, count + 1, g_new, next_direction, seen)


def _frozen(active: torch.Tensor, seen: tuple) -> tuple:
    """``(active, mask, rows)`` with ``mask`` the (B, 1) mask of frozen samples and ``rows``
    their indices (CPU only), or None when every sample is active. The loop hands a new
    ``active`` tensor only when samples stop, so the verdict (a device-to-host read) is taken
    once per change, not once per step."""
    if active is seen[0]:
        return seen
    if active.device.type == "cpu" and not active.requires_grad:  # NumPy: no torch dispatch
        stopped = ~active.numpy()
        if not stopped.any():
            return active, None, None
        return active, torch.from_numpy(stopped[:, None]), torch.from_numpy(np.flatnonzero(stopped))
    return active, (None if bool(active.all()) else ~active[:, None]), None


def _as_tensor(values: Any, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(values).to(device) if isinstance(values, np.ndarray) else values


def _scalars(update: str, dots: list[torch.Tensor], full: bool) -> tuple[Any, list[Any]]:
    """``(usable, coeffs)`` of a step: which samples update and their coefficients
    [1/(vᵀdg), −(vᵀg)/(vᵀdg), (v_oldᵀg when the ring is full)]. On the host in NumPy (one
    device-to-host copy) for CPU states, on the device elsewhere."""
    if host_side(dots[0].device):
        return _host_scalars(update, to_host(dots), full)
    return _device_scalars(update, dots, full)


def _host_scalars(update: str, host: np.ndarray, full: bool) -> tuple[np.ndarray, list]:
    with np.errstate(all="ignore"):
        if update == "good":
            denom, v_g, dz_norm, dg_norm = host[:4]
            tiny = float_limits(denom.dtype)[0] * dz_norm * dg_norm
            usable = (np.abs(denom) > tiny) & np.isfinite(denom)
        else:
            dg_norm, v_g = host[:2]
            denom = dg_norm * dg_norm
            usable = (denom > float_limits(denom.dtype)[1]) & np.isfinite(denom)
        scale = np.where(usable, 1.0 / np.where(usable, denom, 1.0), 0.0)
        coeffs = [scale, np.where(usable, -scale * v_g, 0.0)]
    if full:
        coeffs.append(host[-1])
    return usable, coeffs


def _device_scalars(update: str, dots: list[torch.Tensor], full: bool) -> tuple[torch.Tensor, list]:
    with torch.no_grad():
        vals = torch.stack(dots).detach()
        if update == "good":
            denom, v_g, dz_norm, dg_norm = vals[:4]
            tiny = torch.finfo(denom.dtype).eps * dz_norm * dg_norm
            usable = (denom.abs() > tiny) & torch.isfinite(denom)
        else:
            dg_norm, v_g = vals[:2]
            denom = dg_norm * dg_norm
            usable = (denom > torch.finfo(denom.dtype).tiny) & torch.isfinite(denom)
        scale = torch.where(usable, 1.0 / torch.where(usable, denom, 1.0), 0.0)
        coeffs = [scale, torch.where(usable, -scale * v_g, 0.0)]
        if full:
            coeffs.append(vals[-1])
    return usable, coeffs
