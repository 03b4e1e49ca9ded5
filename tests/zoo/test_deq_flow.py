"""DEQ-Flow: convex upsampling, the correlation lookup against a direct computation, the
gradient through the DEQ against finite differences (float64), the detach-flow semantics,
warm starts, the task, and each recipe for 3 steps through the CLI."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import deqkit as dk
from deqkit.data.flow_io import write_flo
from deqkit.train.task import DEQTerms
from deqkit.zoo.deq_flow import DEQFlow, FlowConfig, OpticalFlow
from deqkit.zoo.deq_flow.blocks import convex_upsample
from deqkit.zoo.deq_flow.corr import corr_lookup, corr_pyramid, pixel_grid
from deqkit.zoo.deq_flow.metrics import flow_metrics

F64 = torch.float64
TINY = dict(hidden=6, context=4, feature_dim=8, encoder_widths=(4, 4, 6), corr_levels=2,
            corr_radius=1, corr_dim=6, flow_dim=4, motion_dim=6, head_dim=6)  # fmt: skip


@pytest.mark.parametrize("factor", [4, 8])
def test_convex_upsampling_of_a_constant_flow_is_factor_times_it(factor):
    flow = torch.tensor([1.25, -0.5]).reshape(1, 2, 1, 1).expand(2, 2, 3, 5)
    mask = torch.randn(2, 9 * factor**2, 3, 5)
    up = convex_upsample(flow, mask, factor)
    assert up.shape == (2, 2, 3 * factor, 5 * factor)
    assert torch.allclose(up, factor * flow[:, :, :1, :1].expand_as(up), atol=1e-6)


def test_convex_upsampling_with_a_one_hot_mask_copies_the_centre_vector():
    flow = torch.randn(1, 2, 3, 4)
    mask = torch.full((1, 9, 2, 2, 3, 4), -1e4)
    mask[:, 4] = 1e4  # all weight on the centre of the 3x3 neighbourhood
    up = convex_upsample(flow, mask.reshape(1, 36, 3, 4), 2)
    assert torch.allclose(up, 2 * F.interpolate(flow, scale_factor=2, mode="nearest"))


def _bilinear_zeros(fmap, points):
    # Direct bilinear interpolation with zero outside: sum over the 4 integer neighbours.
    d, h, w = fmap.shape
    x, y = points[..., 0], points[..., 1]
    x0, y0 = x.floor(), y.floor()
    out = torch.zeros(d, *x.shape, dtype=fmap.dtype)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - (x - xi).abs()) * (1 - (y - yi).abs())
            inside = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
            vals = fmap[:, yi.clamp(0, h - 1).long(), xi.clamp(0, w - 1).long()]
            out += torch.where(inside, weight, 0.0) * vals
    return out


def test_correlation_lookup_matches_a_direct_computation():
    torch.manual_seed(0)
    b, d, h, w, radius, levels = 2, 5, 6, 8, 2, 3
    f1, f2 = torch.randn(b, d, h, w, dtype=F64), torch.randn(b, d, h, w, dtype=F64)
    coords = pixel_grid(b, h, w, like=f1) + 3 * torch.randn(b, 2, h, w, dtype=F64)
    got = corr_lookup(corr_pyramid(f1, f2, levels), coords, radius)
    assert got.shape == (b, levels * (2 * radius + 1) ** 2, h, w)
    steps = torch.arange(-radius, radius + 1, dtype=F64)
    for n in range(b):
        for level in range(levels):
            # Pooling the correlation over frame-2 blocks = correlating with pooled features.
            pooled = F.avg_pool2d(f2[n : n + 1], 2**level, stride=2**level)[0] if level else f2[n]
            for i, dy in enumerate(steps):
                for j, dx in enumerate(steps):
                    pts = coords[n].permute(1, 2, 0) / 2**level + torch.stack([dx, dy])
                    expect = (f1[n] * _bilinear_zeros(pooled, pts)).sum(0) / math.sqrt(d)
                    channel = level * (2 * radius + 1) ** 2 + i * (2 * radius + 1) + j
                    assert torch.allclose(got[n, channel], expect, atol=1e-10)


def _tiny_model(detach_flow, backward, **deq):
    """A tiny DEQ-Flow whose f has a fixed point to 1e-11: the random weights are shrunk to
    perturbations, and hidden channels 0/1 follow the flow (GRU candidate tanh(2·flow)) while
    the flow head returns Δ ≈ −0.4·h, a restoring update (a random f lets the flow drift)."""
    torch.manual_seed(0)
    cfg = FlowConfig(**TINY, downsample=4, detach_flow=detach_flow, context_norm="group",
                     weight_norm=False)  # fmt: skip
    options = dict(solver="anderson", tol=1e-11, max_iter=80, on_failure="raise", **deq)
    model = DEQFlow(cfg, backward=backward, **options).double()
    cell, hid = model.deq.cell, cfg.hidden
    flow_in = hid + cfg.context + cfg.motion_dim - 2  # the raw flow closes the GRU input
    with torch.no_grad():
        for p in cell.parameters():
            p.mul_(0.1)
        for k in (0, 1):
            cell.gru.horizontal[2].weight[k, flow_in + k, 0, 2] += 2.0
            cell.gru.vertical[2].weight[k, flow_in + k, 2, 0] += 2.0
            cell.head.conv1.weight[2 * k, k, 1, 1] += 1.0  # relu(h_k) and relu(-h_k)
            cell.head.conv1.weight[2 * k + 1, k, 1, 1] -= 1.0
            cell.head.conv2.weight[k, 2 * k, 1, 1] -= 0.4
            cell.head.conv2.weight[k, 2 * k + 1, 1, 1] += 0.4
    return model


def test_implicit_gradient_through_the_deq_matches_finite_differences_float64():
    model = _tiny_model(False, dk.Implicit(tol=1e-12, max_iter=100))
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(1, 3, 16, 16, generator=g, dtype=F64), torch.rand(1, 3, 16, 16, dtype=F64)
    weights = torch.randn(1, 2, 16, 16, generator=g, dtype=F64)

    def loss():
        flow, _ = model(a, b)
        return (flow * weights).sum()

    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss(), params)
    direction = [torch.randn(p.shape, generator=g, dtype=F64) for p in params]
    analytic = sum((gr * v).sum() for gr, v in zip(grads, direction, strict=True)).item()
    eps = 1e-6  # the loss is strongly curved here: 1e-5 leaves a 7e-4 truncation error
    with torch.no_grad():
        for p, v in zip(params, direction, strict=True):
            p.add_(eps * v)
        up = loss().item()
        for p, v in zip(params, direction, strict=True):
            p.sub_(2 * eps * v)
        down = loss().item()
    numeric = (up - down) / (2 * eps)
    assert abs(analytic - numeric) < 1e-6 * max(1.0, abs(numeric))


def test_detach_flow_cuts_the_flow_path_of_f_and_changes_the_implicit_gradient():
    grads = {}
    for detach in (True, False):
        model = _tiny_model(detach, dk.Implicit(tol=1e-12, max_iter=100))
        x = model.encode(torch.rand(1, 3, 16, 16, dtype=F64), torch.rand(1, 3, 16, 16, dtype=F64))
        cell = model.deq.cell
        with dk.cached_weights(cell):
            h, flow = cell.initial_state(x)
            flow = flow.requires_grad_()
            out = cell((h, flow), x)
            (jac_flow,) = torch.autograd.grad(out[1].sum(), flow, allow_unused=True)
        # d flow'/d flow = 0 when detached (sg(c) + delta), 1 + d delta/d flow otherwise.
        assert jac_flow is None if detach else (jac_flow != 0).any()
        flow_out, _ = model(
            torch.ones(1, 3, 16, 16, dtype=F64) * 0.3, torch.ones(1, 3, 16, 16, dtype=F64) * 0.6
        )
        grads[detach] = torch.autograd.grad(flow_out.sum(), cell.motion.flow1.weight)[0]
    assert not torch.allclose(grads[True], grads[False])


def test_warm_start_from_the_solution_needs_fewer_iterations():
    model = _tiny_model(True, "one_step")
    a, b = torch.rand(2, 3, 16, 16, dtype=F64), torch.rand(2, 3, 16, 16, dtype=F64)
    with torch.no_grad():
        _, cold = model(a, b)
        _, warm = model(a, b, z0=cold.z)
    assert int(warm.nstep.max()) < int(cold.nstep.max())


def test_fixed_point_correction_returns_one_flow_per_state_and_the_unroll_one_per_step():
    torch.manual_seed(0)
    a, b = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    fpc = DEQFlow(FlowConfig(**TINY), max_iter=6, n_states=3, on_failure="ignore")
    flows, sol = fpc(a, b)
    assert len(flows) == 3 and sol.nstep.max() == 6
    raft = DEQFlow(FlowConfig(**TINY, unroll=4))
    flows, sol = raft(a, b)
    assert len(flows) == 4 and sol is None and flows[0].shape == (2, 2, 32, 32)
    assert sum(p.numel() for p in fpc.parameters()) == sum(p.numel() for p in raft.parameters())


def test_task_loss_masks_and_cuts_and_metrics_count_valid_pixels():
    task = OpticalFlow({}, max_flow=10.0)
    flow = torch.zeros(1, 2, 2, 2)
    flow[0, 0, 0, 0] = 50.0  # longer than max_flow: out of the loss
    valid = torch.tensor([[[True, True], [True, False]]])
    pred = torch.ones(1, 2, 2, 2)
    assert task.criterion(pred, (flow, valid)).item() == pytest.approx(1.0)
    metrics = flow_metrics()
    for m in metrics.values():
        m.update(pred, (flow, valid))
    values = {k: float(m.compute()) for k, m in metrics.items()}
    epe = [math.hypot(49, 1), math.sqrt(2), math.sqrt(2)]
    assert values["epe"] == pytest.approx(sum(epe) / 3)
    assert values["out1"] == pytest.approx(100.0) and values["out3"] == pytest.approx(100 / 3)
    assert values["f1_all"] == pytest.approx(100 / 3)
    picture = task.pictures((torch.rand(1, 3, 2, 2), None), (flow, valid), pred)["flow"]
    assert picture.shape == (2, 4 * 2 + 3 * 2, 3) and 0 <= picture.min() <= picture.max() <= 1


def test_a_damped_flow_step_keeps_the_fixed_point_and_rejects_bad_values():
    a, b = torch.rand(1, 3, 16, 16, dtype=F64), torch.rand(1, 3, 16, 16, dtype=F64)
    flows = {}
    for step in (1.0, 0.5):
        model = _tiny_model(True, "one_step")
        model.deq.cell.cfg = dataclasses.replace(model.config, flow_step=step)
        with torch.no_grad():
            flows[step], sol = model(a, b)
        assert bool(sol.converged.all())
    assert torch.allclose(flows[1.0], flows[0.5], atol=1e-8)
    for bad in (0.0, 1.5, True):
        with pytest.raises((ValueError, TypeError), match="flow_step"):
            FlowConfig(**TINY, flow_step=bad)


def test_flow_residual_penalty_is_the_flow_update_at_the_state_and_trains_it_down():
    torch.manual_seed(0)
    model = DEQFlow(FlowConfig(**TINY), max_iter=3, on_failure="ignore")
    task = OpticalFlow({}, residual_weight=2.0)
    a, b = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    targets = (torch.zeros(2, 2, 16, 16), torch.ones(2, 16, 16, dtype=torch.bool))
    output, sol = task.forward(model.train(), (a, b))
    x = model.encode(a, b)
    with dk.cached_weights(model.deq.cell):
        _, moved = model.deq.cell(sol.z, x)
    expected = 4 * (moved - sol.z[1]).abs().mean()  # downsample 4: full-resolution pixels
    assert sol.aux.item() == pytest.approx(expected.item(), rel=1e-5)
    loss = task.loss(output, targets, sol, DEQTerms())
    plain = task.criterion(output, targets)
    assert loss.total.item() == pytest.approx(plain.item() + 2.0 * sol.aux.item(), rel=1e-5)
    assert "flow_residual" in loss.terms
    # Descending on the penalty alone lowers it.
    opt = torch.optim.SGD(model.deq.cell.parameters(), lr=0.01)
    before = sol.aux.item()
    for _ in range(5):
        _, sol = model(a, b, flow_residual=True)
        opt.zero_grad()
        sol.aux.backward()
        opt.step()
    assert model(a, b, flow_residual=True)[1].aux.item() < 0.5 * before
    with torch.no_grad():  # evaluation: no penalty computed
        assert task.forward(model.eval(), (a, b))[1].aux is None
    with pytest.raises(ValueError, match="unroll"):
        DEQFlow(FlowConfig(**TINY, unroll=2))(a, b, flow_residual=True)
    with pytest.raises(ValueError, match="residual_weight"):
        OpticalFlow({}, residual_weight=-1.0)


def test_warm_rows_measure_the_distance_to_the_cold_solve():
    from deqkit.zoo.deq_flow.experiments import warm_rows

    torch.manual_seed(0)
    model = DEQFlow(FlowConfig(**TINY), max_iter=4, on_failure="ignore").eval()
    rows = warm_rows(model, sequences=1, frames=3, size=(32, 48), budgets=(2,), tol=1e-3,
                     stop_mode="abs", starts=("cold", "warm", "warm_flow"))  # fmt: skip
    assert [r["start"] for r in rows] == ["cold", "warm", "warm_flow"]
    assert rows[0]["to_cold"] == 0.0 and all(r["init_to_cold"] > 0 for r in rows[1:])
    assert all(r["tol"] == 1e-3 and r["stop_mode"] == "abs" for r in rows)
    assert model.deq.tol != 1e-3  # restored
    with pytest.raises(ValueError, match="starts"):
        warm_rows(model, sequences=1, frames=3, size=(32, 48), starts=("warm",))


def _three_steps(out, recipe, overrides):
    from deqkit.cli import main

    args = ["train", recipe, "--out", str(out), "--no-progress"]
    for item in ["train.steps=3", "train.eval_every=3", "train.checkpoint_every=3",
                 "deq.max_iter=4", "deq.eval_max_iter=4", *overrides]:  # fmt: skip
        args += ["--set", item]
    assert main(args) == 0


@pytest.mark.parametrize("recipe", ["deq-flow-synthetic", "raft-unrolled-synthetic"])
def test_synthetic_recipes_train_three_steps_through_the_cli(tmp_path, recipe):
    out = tmp_path / "run"
    _three_steps(out, recipe, ["data.size=[32,48]", "data.test_pairs=2", "data.batch_size=2",
                               "train.budget_delta=1",  # budgets 3-5 keep n_states=2
                               "model.unroll=" + ("3" if "raft" in recipe else "0")])  # fmt: skip
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(r.get("kind") == "train" for r in records) == 3
    summary = json.loads((out / "summary.json").read_text())
    assert math.isfinite(summary["test_epe"])
    assert (out / "pictures").is_dir()


def _write_pfm(path, flow):
    # PFM as FlyingThings3D stores flow: "PF", width height, -1 (little-endian), bottom row first.
    h, w, _ = flow.shape
    rgb = np.concatenate([flow, np.zeros((h, w, 1), np.float32)], 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(f"PF\n{w} {h}\n-1.0\n".encode() + np.flipud(rgb).astype("<f4").tobytes())


def test_pfm_reader_reads_things_flow(tmp_path):
    from deqkit.data.flow_io import read_pfm

    flow = np.random.default_rng(0).normal(size=(3, 4, 2)).astype(np.float32)
    _write_pfm(tmp_path / "f.pfm", flow)
    assert np.array_equal(read_pfm(tmp_path / "f.pfm")[..., :2], flow)


@pytest.mark.parametrize("recipe", ["deq-flow-chairs", "deq-flow-things"])
def test_paper_recipes_build_and_train_three_steps_on_tiny_folders(tmp_path, recipe):
    from skimage import io

    rng = np.random.default_rng(0)
    h, w = 64, 72
    root = tmp_path / "data"
    for i in range(3):
        images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(2)]
        flow = rng.normal(size=(h, w, 2)).astype(np.float32)
        if recipe == "deq-flow-chairs":
            (root / "data").mkdir(parents=True, exist_ok=True)
            for k, image in enumerate(images):
                io.imsave(str(root / "data" / f"{i + 1:05d}_img{k + 1}.ppm"), image)
            write_flo(root / "data" / f"{i + 1:05d}_flow.flo", flow)
        else:
            seq = root / "frames_cleanpass" / "TRAIN" / "A" / f"{i:04d}" / "left"
            seq.mkdir(parents=True)
            for k, image in enumerate(images):
                io.imsave(str(seq / f"{6 + k:04d}.png"), image)
            flows = root / "optical_flow" / "TRAIN" / "A" / f"{i:04d}" / "into_future" / "left"
            _write_pfm(flows / "OpticalFlowIntoFuture_0006_L.pfm", flow)
    small = ["model.hidden=8", "model.context=8", "model.feature_dim=8",
             "model.encoder_widths=[4,4,8]", "model.corr_dim=8", "model.flow_dim=4",
             "model.motion_dim=8", "model.head_dim=8", "deq.n_states=2"]  # fmt: skip
    _three_steps(tmp_path / "run", recipe, [f"data.root={root}", "data.crop=[64,64]",
                 "data.batch_size=2", "train.device=cpu", *small])  # fmt: skip
