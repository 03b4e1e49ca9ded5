"""DEQ-DDIM: the joint fixed point equals the sequential DDIM chain (analytic and untrained UNet
denoisers, η = 0 and η > 0 with pre-drawn noise), its lower-triangular structure, the UNet and
the DDPM loss."""

from __future__ import annotations

import pytest
import torch

import deqkit as dk
from deqkit.zoo import deq_ddim as dd

torch.set_num_threads(1)
F64 = torch.float64


def _gaussian(schedule="linear"):
    abar = dd.alpha_bars(schedule, 1000, F64)
    mean = torch.linspace(-0.8, 0.8, 64, dtype=F64)
    return abar, dd.GaussianEps(abar, mean=mean, std=0.3)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("eta", [0.0, 0.7])
@pytest.mark.parametrize("n_steps", [20, 50])
def test_deq_equals_sequential_ddim_analytic_eps(schedule, eta, n_steps):
    abar, eps = _gaussian(schedule)
    steps = dd.ddim_steps(abar, n_steps, eta=eta)
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(3, 64, dtype=F64, generator=g)
    noise = dd.draw_noise(steps, x_T, generator=g)
    assert (noise is None) == (eta == 0)
    ref = dd.ddim_sample(eps, x_T, steps, noise)
    out = dd.deq_sample(eps, x_T, steps, noise, tol=1e-11, criterion="per_state")
    assert out.converged.all()
    assert (out.x0 - ref).abs().max().item() < 1e-8
    # Without the same noise the samples differ: the test can fail.
    if noise is not None:
        other = dd.deq_sample(eps, x_T, steps, torch.randn_like(noise), tol=1e-11)
        assert (other.x0 - ref).abs().max().item() > 1e-3


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_practical_tolerance_fewer_rounds_than_steps(eta):
    # At a per-pixel RMS tolerance of 1e-4 on every state, Anderson needs far fewer sequential
    # rounds than the S = 100 steps, and x0 stays within 1e-3 of sequential DDIM.
    abar, eps = _gaussian()
    steps = dd.ddim_steps(abar, 100, eta=eta)
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(3, 64, dtype=F64, generator=g)
    noise = dd.draw_noise(steps, x_T, generator=g)
    ref = dd.ddim_sample(eps, x_T, steps, noise)
    out = dd.deq_sample(eps, x_T, steps, noise, tol=1e-4, criterion="per_state")
    assert out.converged.all()
    assert out.rounds < 50
    assert (out.x0 - ref).abs().max().item() < 1e-3


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_deq_equals_sequential_ddim_untrained_unet(eta):
    torch.manual_seed(0)
    model = dd.DDPM(1, dd.DDPMConfig(train_steps=100, unet={"channels": 8, "attention": True}))
    model = model.to(F64).eval()
    steps = dd.ddim_steps(model.abar, 10, eta=eta)
    x_T = torch.randn(2, 1, 7, 8, dtype=F64)
    noise = dd.draw_noise(steps, x_T, generator=torch.Generator().manual_seed(1))
    ref = dd.ddim_sample(model.eps, x_T, steps, noise)
    for criterion in ("per_state", "final"):
        out = dd.deq_sample(model.eps, x_T, steps, noise, tol=1e-10, criterion=criterion)
        assert out.converged.all(), criterion
        assert out.x0.shape == x_T.shape and out.trajectory.shape == (2, 10, 1, 7, 8)
        assert (out.x0 - ref).abs().max().item() < 1e-7, criterion


def test_joint_map_is_lower_triangular_picard_exact_after_s_steps():
    abar, eps = _gaussian()
    n = 12
    steps = dd.ddim_steps(abar, n)
    x_T = torch.randn(2, 64, dtype=F64, generator=torch.Generator().manual_seed(3))
    ref = dd.ddim_sample(eps, x_T, steps)
    h = dd.joint_map(eps, x_T, steps)
    x = torch.zeros(2, n, 64, dtype=F64)
    for k in range(1, n + 1):
        x = h(x)
        # After k applications the first k states are exact, the rest not yet.
        exact = (x - _trajectory(eps, x_T, steps)).abs().amax(dim=(0, 2)) < 1e-10
        assert exact[:k].all() and not exact[k:].any()
    assert (x[:, -1] - ref).abs().max().item() < 1e-10
    # The same through the core's Picard solver: S + 1 evaluations, the last one confirming.
    sol = dk.solve(h, torch.zeros_like(x), "fixed_point", tol=1e-10, max_iter=n + 1,
                   stop_mode="abs", on_failure="ignore")  # fmt: skip
    assert (sol.z[:, -1] - ref).abs().max().item() < 1e-10


def _trajectory(eps, x_T, steps):
    x, out = x_T, []
    for i in range(len(steps)):
        x = steps.a[i].item() * x + steps.b[i].item() * eps(x, steps.t[i].expand(x.shape[0]))
        out.append(x)
    return torch.stack(out, 1)


def test_state_criterion_bounds_every_state_not_only_the_largest():
    # The stopping residual is the worst per-state RMS: a small residual in a big state and a
    # large one in a small state stops on the latter.
    s = dd.StateAnderson(m=2, n_states=2)
    z = torch.zeros(1, 4)
    fz = torch.tensor([[100.0, 100.0, 0.0, 0.5]])
    worst = s.residual(s.init(z, fz))[0, 0].item()
    assert worst == pytest.approx(100.0)
    final = dd.StateAnderson(m=2, n_states=2, criterion="final")
    assert final.residual(final.init(z, fz))[0, 0].item() == pytest.approx(0.5 / 2**0.5)


def test_unet_shapes_odd_sizes_and_time_dependence():
    torch.manual_seed(0)
    net = dd.UNet(3, dd.UNetConfig(channels=8, mults=(1, 2, 2), blocks=2, attention=True))
    for h, w in [(7, 7), (9, 5), (28, 28), (8, 8)]:
        x = torch.randn(2, 3, h, w)
        assert net(x, torch.tensor([0, 10])).shape == (2, 3, h, w)
    x = torch.randn(1, 3, 8, 8)
    assert not torch.allclose(net(x, torch.tensor([0])), net(x, torch.tensor([500])))


def test_ddpm_loss_trains():
    torch.manual_seed(0)
    model = dd.DDPM(1, dd.DDPMConfig(train_steps=100, unet={"channels": 8}))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x0 = torch.sign(torch.randn(16, 1, 8, 8))
    g = torch.Generator().manual_seed(0)

    def loss_at(gen):
        pred, eps = dd.ddpm_loss(model.net, x0, model.abar, generator=gen)
        return torch.nn.functional.mse_loss(pred, eps)

    with torch.no_grad():
        before = loss_at(torch.Generator().manual_seed(9)).item()
    for _ in range(60):
        opt.zero_grad()
        loss_at(g).backward()
        opt.step()
    with torch.no_grad():
        after = loss_at(torch.Generator().manual_seed(9)).item()
    assert after < 0.7 * before


def test_schedules():
    for name in dd.SCHEDULES:
        a = dd.alpha_bars(name, 1000)
        assert (a[1:] < a[:-1]).all() and 0 < a[-1] < 1e-2 and a[0] > 0.99
    s = dd.ddim_steps(dd.alpha_bars("linear"), 10, eta=1.0)
    # η = 1 is the DDPM posterior: σ² = (1 − ᾱ_prev)/(1 − ᾱ)·β_t for consecutive steps.
    one = dd.ddim_steps(dd.alpha_bars("linear", 10), 10, eta=1.0)
    beta = dd.betas("linear", 10)
    expected = (1 - one.abar_prev) / (1 - one.abar) * beta.flip(0)
    assert torch.allclose(one.sigma**2, expected)
    assert (s.sigma[:-1] > 0).all() and s.sigma[-1] == 0  # the step to x0 adds no noise


def test_user_errors():
    abar, eps = _gaussian()
    steps = dd.ddim_steps(abar, 5, eta=0.5)
    x_T = torch.zeros(1, 64, dtype=F64)
    with pytest.raises(ValueError, match="pre-drawn noise"):
        dd.ddim_sample(eps, x_T, steps)
    with pytest.raises(ValueError, match="noise must have shape"):
        dd.deq_sample(eps, x_T, steps, torch.zeros(4, 1, 64, dtype=F64))
    with pytest.raises(ValueError, match="stopping criterion"):
        dd.deq_sample(eps, x_T, dd.ddim_steps(abar, 5), criterion="max")
    with pytest.raises(ValueError, match="beta schedule"):
        dd.betas("quadratic")
    with pytest.raises(ValueError, match="unknown deq_ddim model options"):
        dd.build({"chanels": 8}, {}, {"in_channels": 1})


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_inversion_fixed_point_recovers_x_T(schedule):
    from deqkit.zoo.deq_ddim.inversion import invert

    abar, eps = _gaussian(schedule)
    steps = dd.ddim_steps(abar, 20)
    x_T = torch.randn(3, 64, dtype=F64, generator=torch.Generator().manual_seed(0))
    x0 = dd.ddim_sample(eps, x_T, steps)
    inv = invert(eps, x0, steps, tol=1e-10, max_iter=200)
    assert inv.converged.all()
    assert (inv.x_T - x_T).abs().max().item() < 1e-7
    assert (dd.ddim_sample(eps, inv.x_T, steps) - x0).abs().max().item() < 1e-8


def test_inversion_untrained_unet_and_errors():
    from deqkit.zoo.deq_ddim.inversion import invert

    torch.manual_seed(0)
    model = dd.DDPM(1, dd.DDPMConfig(train_steps=100, unet={"channels": 8})).to(F64).eval()
    steps = dd.ddim_steps(model.abar, 10)
    x_T = torch.randn(2, 1, 7, 8, dtype=F64)
    inv = invert(model.eps, dd.ddim_sample(model.eps, x_T, steps), steps, tol=1e-10)
    assert inv.converged.all()
    assert (inv.x_T - x_T).abs().max().item() < 1e-7
    with pytest.raises(ValueError, match="eta=0"):
        invert(model.eps, x_T, dd.ddim_steps(model.abar, 10, eta=1.0))
