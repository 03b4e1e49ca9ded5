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
from typing import ClassVar

import numpy as np
import torch

from ..options import BroydenOptions
from ._buffers import bounded_step_search, history_buffer, recording, release, write_slot
from .base import Evaluate, Solver, to_host


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

    def init(self, z: torch.Tensor, fz: torch.Tensor):
        g = fz - z
        # Memory: U, V, the update count, g(z) and the next direction −J⁻¹g(z) for the current
        # z. Carrying the last two means a step passes over U and V four times, not six.
        # J⁻¹ = −I at the start, so the first direction is g itself. Unwritten slots of U and V
        # are never read, so they start uninitialised.
        us, vs = history_buffer(z, self.memory), history_buffer(z, self.memory)
        return us, vs, 0, g, g

    def residual(self, memory):
        return memory[3]

    def release(self, memory):
        release(memory[0], memory[1])

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
        us, vs, count, g, direction = memory
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
        host = to_host(dots)
        with np.errstate(all="ignore"):
            if self.update == "good":
                denom, v_g, dz_norm, dg_norm = host[:4]
                tiny = np.finfo(denom.dtype).eps * dz_norm * dg_norm
                usable = (np.abs(denom) > tiny) & np.isfinite(denom)
                denom_t = dots[0]
            else:
                dg_norm, v_g = host[:2]
                denom = dg_norm * dg_norm
                usable = (denom > np.finfo(denom.dtype).tiny) & np.isfinite(denom)
                denom_t = dots[0].square()
            scale = np.where(usable, 1.0 / np.where(usable, denom, 1.0), 0.0)
            coeffs = [scale, np.where(usable, -scale * v_g, 0.0)]
        if recording(numer, v, dg, us, vs):
            # Unrolled backward: the same update, differentiable through 1 / (vᵀdg).
            keep = torch.from_numpy(usable).to(z.device)[:, None]
            inv_denom = keep.to(v.dtype) / torch.where(keep, denom_t[:, None], 1.0)
            u = torch.where(keep, numer * inv_denom, 0.0)
            v = torch.where(keep, v, 0.0)
            next_direction = d - u * (v * g_new).sum(dim=1, keepdim=True)
            if full:
                next_direction = next_direction + us[:, slot] * dots[-1][:, None]
            us, vs = write_slot(us, slot, u), write_slot(vs, slot, v)
            return z_new, fz_new, (us, vs, count + 1, g_new, next_direction)
        if full:
            coeffs.append(host[-1])
        coeffs = torch.from_numpy(np.stack(coeffs)).to(z.device, z.dtype)[:, :, None]
        next_direction = torch.addcmul(d, numer, coeffs[1])
        if full:
            next_direction.addcmul_(us[:, slot], coeffs[2])
        torch.mul(numer, coeffs[0], out=us[:, slot])  # u, straight into its slot
        if usable.all():
            vs[:, slot].copy_(v)
        else:  # no update for these samples: no NaN/Inf may enter U Vᵀ
            keep = torch.from_numpy(usable).to(z.device)[:, None]
            vs[:, slot] = torch.where(keep, v, 0.0)
            us[:, slot] = torch.where(keep, us[:, slot].nan_to_num(), 0.0)
        return z_new, fz_new, (us, vs, count + 1, g_new, next_direction)
