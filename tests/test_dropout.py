"""Variational dropout: mask fixed within a DEQ call and its backward, new per call."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import deqkit as dk


class DropCell(nn.Module):
    def __init__(self, dim=8, p=0.5, drop=None):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(dim, dim, dtype=torch.float64)
        with torch.no_grad():
            self.lin.weight.mul_(0.3)
        self.drop = drop if drop is not None else dk.VariationalDropout(p)
        self.masks = []

    def forward(self, z, x):
        out = self.drop(torch.tanh(self.lin(z) + x))
        self.masks.append(self.drop._mask)
        return out


def test_mask_shared_by_iterations_and_backward_and_new_per_call():
    cell = DropCell()
    deq = dk.DEQ(cell, backward="phantom", tol=1e-9, max_iter=60)
    x = torch.randn(4, 8, dtype=torch.float64)
    z, sol = deq(x)
    assert sol.status == dk.Status.CONVERGED
    first = cell.masks
    assert len(first) == sol.nfev + dk.Phantom().steps  # phantom steps reuse it too
    assert all(m is first[0] for m in first)
    # the fixed point is exact for the masked map
    torch.testing.assert_close(cell.drop(torch.tanh(cell.lin(z) + x)), z, atol=1e-7, rtol=0)
    cell.masks = []
    deq(x)
    assert not torch.equal(cell.masks[0], first[0])


def test_implicit_gradient_of_masked_map_matches_unrolled():
    cell = DropCell()
    x = torch.randn(3, 8, dtype=torch.float64)
    grads = []
    for backward in (dk.Implicit(tol=1e-12, max_iter=100), dk.Unrolled()):
        torch.manual_seed(5)  # same mask draw for both runs
        deq = dk.DEQ(cell, backward=backward, tol=1e-12, max_iter=100)
        z, _ = deq(x)
        grads.append(torch.autograd.grad(z.sum(), cell.lin.weight)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=1e-9)


def test_scaling_identity_in_eval_and_dtype():
    drop = dk.VariationalDropout(0.25)
    x = torch.ones(200, 50, dtype=torch.float64)
    out = drop(x)
    assert out.dtype == torch.float64 and out.device == x.device
    assert set(out.unique().tolist()) <= {0.0, 1 / 0.75}
    assert out.mean().item() == pytest.approx(1.0, abs=0.03)
    drop.eval()
    assert drop(x) is x
    assert dk.VariationalDropout(0.0)(x) is x


def test_variants_share_mask_along_the_right_dims():
    maps = dk.VariationalDropout2d(0.5)(torch.ones(4, 6, 3, 5))
    assert (maps.amax(dim=(2, 3)) == maps.amin(dim=(2, 3))).all()
    tokens = dk.VariationalDropoutToken(0.5)(torch.ones(4, 7, 3))
    assert (tokens.amax(dim=2) == tokens.amin(dim=2)).all()
    feats = dk.VariationalDropout(0.5, shared_dims=(1,))(torch.ones(4, 7, 3))
    assert (feats.amax(dim=1) == feats.amin(dim=1)).all()


def test_new_batch_size_draws_new_mask_and_errors():
    drop = dk.VariationalDropout(0.5)
    assert drop(torch.ones(2, 3)).shape == (2, 3)
    assert drop(torch.ones(5, 3)).shape == (5, 3)
    with pytest.raises(ValueError, match="< 1"):
        dk.VariationalDropout(1.0)
    with pytest.raises(ValueError, match="batch"):
        dk.VariationalDropout(0.1, shared_dims=(0,))
    with pytest.raises(ValueError, match="do not fit"):
        dk.VariationalDropout(0.1, shared_dims=(3,))(torch.ones(2, 3))
    with pytest.raises(ValueError, match="B, C"):
        dk.VariationalDropout2d(0.1)(torch.ones(2, 3))


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_mask_follows_input_device_and_dtype(device, dtype):
    for drop in (dk.VariationalDropout(0.3), dk.VariationalDropout2d(0.3)):
        x = torch.ones(2, 3, 4, 4, device=device, dtype=dtype)
        out = drop(x)
        assert out.dtype == dtype and out.device.type == device
        assert drop._mask.dtype == dtype and drop._mask.device.type == device
