"""DEQ-INR: filters computed once, amortisation cache by index, gradients, spectral norm,
test-time solves from zeros, failure reporting, and the equal-size explicit baseline."""

from __future__ import annotations

import pytest
import torch

import deqkit as dk
from deqkit.data.signals import load_signal
from deqkit.zoo import build_model
from deqkit.zoo.deq_inr import DEQINR, ExplicitMFN, INRConfig, build, count_parameters
from deqkit.zoo.deq_inr.fit import evaluate, fit

QUIET = {"on_failure": "ignore", "solver": "fixed_point"}


def tiny(n=12, width=8, layers=1, seed=0, config=None, **deq):
    torch.manual_seed(seed)
    cfg = INRConfig(width=width, layers=layers, input_scale=4.0, **(config or {}))
    net = DEQINR(cfg, 2, 1, num_points=n, **{"tol": 1e-6, "max_iter": 100, **QUIET, **deq})
    coords = torch.rand(n, 2) * 2 - 1
    return net, coords


@pytest.mark.parametrize("kind", ["fourier", "gabor"])
def test_filters_are_computed_once_per_batch_and_do_not_depend_on_the_state(kind):
    net, coords = tiny(config={"filter": kind}, layers=2)
    calls = {"filters": 0, "cell": 0}
    net.filters.register_forward_hook(lambda *_: calls.__setitem__("filters", calls["filters"] + 1))
    net.cell.register_forward_hook(lambda *_: calls.__setitem__("cell", calls["cell"] + 1))
    net.eval()
    _, sol = net(coords)
    assert calls["filters"] == 1 and calls["cell"] >= 5 and sol.status == dk.Status.CONVERGED
    # the cell only reads the filters: two different states see the same filter outputs
    g = net.filters(coords)
    g_before = [t.clone() for t in g]
    net.cell(torch.randn(12, 8), g)
    net.cell(torch.randn(12, 8), g)
    assert all(torch.equal(a, b) for a, b in zip(g, g_before, strict=True))
    assert all(not t.requires_grad or t.grad_fn is not None for t in g)  # functions of x only


def test_one_application_from_zero_is_the_explicit_mfn_with_the_same_parameters():
    cfg = {"width": 16, "layers": 4, "input_scale": 8.0}
    torch.manual_seed(1)
    deq = DEQINR(INRConfig(**cfg), 2, 3, num_points=5)
    torch.manual_seed(1)
    explicit = ExplicitMFN(INRConfig(**cfg, explicit=True), 2, 3)
    assert count_parameters(deq) == count_parameters(explicit)
    # 5 filters (2-D frequencies + phase), 4 hidden maps, the read-out
    assert count_parameters(deq) == 5 * (2 * 16 + 16) + 4 * (16 * 16 + 16) + 3 * 16 + 3
    x = torch.rand(5, 2) * 2 - 1
    deq.eval(), explicit.eval()
    with torch.no_grad(), dk.cached_weights(deq.cell):
        g = deq.filters(x)
        one_pass = deq.readout(deq.cell(torch.zeros(5, 16), g))
    assert torch.allclose(one_pass, explicit(x)[0])


def test_spectral_norm_target_holds_and_makes_f_a_contraction():
    net, coords = tiny(layers=4, width=16, n=20)
    target = torch.randn(20, 1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(5):
        pred, _ = net(coords, torch.arange(20))
        loss = (pred - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    # Training mode: the weight is normalised by 5 fresh power iterations, as in every solve.
    for linear in net.cell.linears:
        sigma = torch.linalg.matrix_norm(linear.weight.detach(), ord=2)
        assert sigma == pytest.approx(0.97, abs=1e-3)
    net.eval()  # eval mode reuses the last estimate: the weights of the last step, stale by one
    for linear in net.cell.linears:
        sigma = torch.linalg.matrix_norm(linear.weight.detach(), ord=2)
        assert sigma == pytest.approx(0.97, abs=0.02)
    with torch.no_grad(), dk.cached_weights(net.cell):
        # |g_l| <= 1 and ||W_l|| = 0.97: f is a 0.97^4 contraction in z, for every coordinate
        g = net.filters(coords)
        z1, z2 = torch.randn(20, 16), torch.randn(20, 16)
        gap = (net.cell(z1, g) - net.cell(z2, g)).norm(dim=1) / (z1 - z2).norm(dim=1)
    assert float(gap.max()) <= 0.97**4 * 1.02


def test_clamped_spectral_norm_caps_at_the_target_and_leaves_smaller_weights_alone():
    # The (Implicit)^2 code's variant (norm_mode="clamp"): sigma <= target, not = target.
    net, coords = tiny(
        layers=2, width=16, n=20, config={"norm_mode": "clamp", "power_iterations": 30}
    )
    for linear in net.cell.linears:
        with torch.no_grad():
            linear.parametrizations.weight.original.mul_(5.0)  # sigma ~ 5.8 > 0.97
    net(coords, torch.arange(20))
    for linear in net.cell.linears:  # clamped down to the target
        sigma = torch.linalg.matrix_norm(linear.weight.detach(), ord=2)
        assert sigma == pytest.approx(0.97, abs=1e-3)
        raw = linear.parametrizations.weight.original
        with torch.no_grad():  # now shrink the raw weight below the target: left alone
            raw.mul_(0.5 / torch.linalg.matrix_norm(raw, ord=2))
    net(coords, torch.arange(20))
    for linear in net.cell.linears:
        raw = linear.parametrizations.weight.original.detach()
        assert torch.linalg.matrix_norm(raw, ord=2) < 0.97
        assert torch.allclose(linear.weight.detach(), raw)
    with pytest.raises(ValueError, match="norm_mode must be one of"):
        INRConfig(norm_mode="clip")


def test_amortised_cache_is_keyed_by_coordinate_index_and_survives_shuffling():
    net, coords = tiny()
    first = torch.randperm(12)
    net(coords[first], first)  # solves (empty cache), stores per index
    net.eval()
    with torch.no_grad():
        z_star, _ = net.deq(net.filters(coords))
    net.train()
    stored = net.cache.get(torch.arange(12), default=torch.zeros(12, 8))
    assert torch.allclose(stored, z_star, atol=1e-5)
    # an amortised step in another order applies f once to each coordinate's own state
    second = torch.randperm(12)
    before = net.cache.get(second, default=torch.zeros(12, 8))
    out, sol = net(coords[second], second)
    assert sol.nfev == 1
    with torch.no_grad(), dk.cached_weights(net.cell):
        expected = net.cell(before, net.filters(coords[second]))
        assert torch.allclose(out, net.readout(expected), atol=1e-6)
    after = net.cache.get(second, default=torch.zeros(12, 8))
    assert torch.allclose(after, expected, atol=1e-6)


def test_the_amortised_states_travel_with_the_state_dict():
    net, coords = tiny()
    index = torch.arange(12)
    assert "_extra_state" in net.state_dict() and net.state_dict()["_extra_state"] == {}
    net(coords, index)  # solve, cache filled
    state = net.state_dict()
    fresh, _ = tiny(seed=1)
    fresh.load_state_dict(state)
    out_a, sol_a = net(coords, index)
    out_b, sol_b = fresh(coords, index)
    assert sol_a.nfev == sol_b.nfev == 1 and torch.equal(out_a, out_b)
    fresh.load_state_dict({**state, "_extra_state": {}})
    assert len(fresh.cache) == 0


def test_partial_batches_solve_until_every_coordinate_is_cached():
    net, coords = tiny()
    _, sol = net(coords[:6], torch.arange(6))
    assert sol.nfev > 1
    with torch.no_grad():  # move the fixed point, as an optimiser step would
        net.filters.filters[0].linear.bias.add_(0.5)
    _, sol = net(coords[:6], torch.arange(6))
    assert sol.nfev > 1  # half the coordinates never seen: still solving (from the cache)
    net(coords[6:], torch.arange(6, 12))
    _, sol = net(coords[:6], torch.arange(6))
    assert sol.nfev == 1


def test_evaluation_solves_from_zeros_whatever_the_cache_holds():
    net, coords = tiny()
    index = torch.arange(12)
    net(coords, index)
    net.eval()
    with torch.no_grad():
        clean, sol = net(coords, index)
    net.cache.put(index, torch.full((12, 8), 50.0))
    with torch.no_grad():
        again, sol2 = net(coords, index)
    assert torch.equal(clean, again) and sol.nfev == sol2.nfev > 1


def _loss(net, coords):
    values, _ = net(coords)
    return (values * torch.linspace(-1, 1, len(values), dtype=values.dtype)[:, None]).sum()


def test_implicit_gradients_match_finite_differences_in_float64():
    net, coords = tiny(
        n=6, width=6, layers=2, config={"spectral_norm": False, "filter": "gabor"},
        backward=dk.Implicit(tol=1e-13, max_iter=200), tol=1e-13, max_iter=300,
    )  # fmt: skip
    net = net.double()
    coords = coords.double()
    with torch.no_grad():
        for linear in net.cell.linears:
            linear.weight.mul_(0.5)  # contraction without spectral norm
    net.eval()  # eval mode still differentiates; it solves from zeros
    params = [net.cell.linears[0].weight, net.filters.filters[1].linear.weight,
              net.filters.filters[2].gamma, net.readout.bias]  # fmt: skip
    grads = torch.autograd.grad(_loss(net, coords), params)
    eps = 1e-6
    for p, g in zip(params, grads, strict=True):
        for k in range(min(p.numel(), 4)):
            with torch.no_grad():
                p.view(-1)[k] += eps
                up = _loss(net, coords)
                p.view(-1)[k] -= 2 * eps
                down = _loss(net, coords)
                p.view(-1)[k] += eps
            fd = (up - down) / (2 * eps)
            assert float(g.view(-1)[k]) == pytest.approx(float(fd), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize(
    "backward", ["one_step", dk.Phantom(steps=5, damping=1.0), dk.Implicit(tol=1e-8)]
)
def test_every_backward_trains_and_amortisation_costs_one_f_per_step(backward):
    s = load_signal("camera", resolution=12)
    torch.manual_seed(0)
    cfg = INRConfig(width=16, input_scale=12.0)
    net = DEQINR(cfg, 2, 1, len(s.coords), backward=backward, tol=1e-3, **QUIET)
    result = fit(net, s, steps=25, lr=1e-2)
    assert result.f_per_step == 1.0 and result.f_first_step > 3
    assert result.train["psnr"] > 14.0  # from about 10 dB at initialisation
    assert result.test["status"] == "CONVERGED" and result.test["converged"] == 1.0


def test_phantom_gradient_approaches_the_implicit_one():
    grads = {}
    for name, backward in [("ift", dk.Implicit(tol=1e-12, max_iter=200)),
                           ("phantom", dk.Phantom(steps=60, damping=1.0)),
                           ("one_step", "one_step")]:  # fmt: skip
        net, coords = tiny(layers=2, backward=backward, tol=1e-10, max_iter=200)
        net.eval()
        grads[name] = torch.autograd.grad(
            _loss(net, coords), net.cell.linears[0].parametrizations.weight.original
        )[0]
    err = lambda a: float((grads[a] - grads["ift"]).norm() / grads["ift"].norm())  # noqa: E731
    assert err("phantom") < 1e-3 < err("one_step")


def test_without_spectral_norm_a_failed_test_solve_is_reported():
    s = load_signal("camera", resolution=8)
    torch.manual_seed(0)
    cfg = INRConfig(width=16, input_scale=8.0, spectral_norm=False)
    net = DEQINR(cfg, 2, 1, len(s.coords), tol=1e-4, max_iter=30, **QUIET)
    with torch.no_grad():
        for linear in net.cell.linears:
            linear.weight.mul_(8.0)  # far from contractive: Picard cannot settle
    report = evaluate(net, s, s.test_index)
    assert report["status"] != "CONVERGED" and report["converged"] < 0.5
    assert report["residual_max"] > 1e-4
    with pytest.warns(dk.DEQWarning):
        DEQINR(cfg, 2, 1, 64, tol=1e-4, max_iter=30, solver="fixed_point")  # default: warns
        net2 = DEQINR(cfg, 2, 1, 64, tol=1e-4, max_iter=30, solver="fixed_point")
        net2.load_state_dict(net.state_dict())
        net2.eval()(s.coords)


def test_build_through_the_zoo_registry_and_config_errors():
    info = {"in_features": 2, "out_features": 1, "num_points": 4}
    assert isinstance(build_model("deq_inr", {"width": 8}, {}, info), DEQINR)
    with pytest.raises(ValueError, match="data_info lacks"):
        build({"width": 8}, {}, {"in_features": 2})
    with pytest.raises(ValueError, match=r"INRConfig.filter must be one of \('fourier', 'gabor'\)"):
        INRConfig(filter="siren")
    with pytest.raises(TypeError, match="INRConfig.width must be an int, got 8.5"):
        INRConfig(width=8.5)
    with pytest.raises(ValueError, match="INRConfig.norm_target must be finite and > 0"):
        INRConfig(norm_target=0.0)


RECIPES = {  # recipe -> overrides that shrink it to seconds (same code path, smaller signal)
    "deq-inr-camera": ["data.resolution=16", "model.input_scale=8.0"],
    "mfn-camera": ["data.resolution=16", "model.input_scale=8.0"],
    "deq-inr-astronaut": ["data.resolution=16", "model.input_scale=8.0"],
    "deq-inr-audio": ["data.resolution=256", "model.input_scale=64.0"],
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_each_recipe_runs_three_steps_through_the_cli(recipe, tmp_path):
    import json

    from deqkit.cli import main

    out = tmp_path / "run"
    sets = ["train.steps=3", "train.eval_every=3", "train.checkpoint_every=3", "model.width=8"]
    sets += RECIPES[recipe]
    args = ["train", recipe, "--out", str(out), "--no-progress"]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r.get("kind", r.get("type")) == "train" or "lr" in r]
    assert len(steps) >= 3
    if not recipe.startswith("mfn"):
        evals = [r["f_evals"] for r in steps if "f_evals" in r]
        assert evals and evals[-1] == 1.0  # amortised: one f per step after the first
    # `deqkit eval RUN` renders image runs at full resolution into RUN/pictures/full.png.
    png = out / "pictures" / "full.png"
    png.unlink(missing_ok=True)
    assert main(["eval", str(out)]) == 0
    from deqkit.zoo.deq_inr import render

    if recipe == "deq-inr-audio":
        assert not png.exists()
        with pytest.raises(ValueError, match="render draws images"):
            render.render(out / "checkpoint.pt")
    else:
        from skimage import io

        assert io.imread(png).shape == (16, 3 * 16 + 4, 3)
        assert main(["eval", str(out), "--json", "--render", str(tmp_path / "e.png")]) == 0
        assert io.imread(tmp_path / "e.png").shape == (16, 3 * 16 + 4, 3)
        render.main([str(out), "--out", str(tmp_path / "full.png")])
        assert io.imread(tmp_path / "full.png").shape == (16, 3 * 16 + 4, 3)
