"""DEQ-DDIM model inversion: the implicit gradient of the DEQ sampler w.r.t. x_T equals
backpropagation through the sequential chain (float64), the phantom gradient's saved
activations do not grow with T, and each method lowers the reconstruction MSE."""

from __future__ import annotations

import pytest
import torch

from deqkit.zoo import deq_ddim as dd
from deqkit.zoo.deq_ddim.model_inversion import InversionOptions, invert_model, reconstruct
from deqkit.zoo.deq_ddim.sampler import state_residual
from deqkit.zoo.deq_seq.memory import saved_tensor_bytes

torch.set_num_threads(1)
F64 = torch.float64


def _grad(eps, x_T, target, steps, method, **options):
    x = x_T.clone().requires_grad_()
    opts = InversionOptions(method, **options)
    x0, z, sol = reconstruct(eps, x, steps, opts)
    (x0 - target).pow(2).sum().backward()
    ok = None
    if z is not None:  # the per-state criterion checked here, independently of the solver
        with torch.no_grad():
            h = dd.joint_map(eps, x_T, steps)
            ok = state_residual(h(z) - z, z.shape[1], "per_state") <= opts.tol
        assert torch.equal(sol.converged, ok)  # the core reports the same criterion
    return x.grad, x0.detach(), ok


@pytest.mark.parametrize("denoiser", ["analytic", "unet"])
def test_implicit_gradient_equals_backprop_through_the_chain(denoiser):
    torch.manual_seed(0)
    if denoiser == "analytic":
        abar = dd.alpha_bars("linear", 1000, F64)
        eps = dd.GaussianEps(abar, mean=torch.linspace(-0.8, 0.8, 16, dtype=F64), std=0.3)
        shape, module = (2, 16), None
    else:
        module = dd.DDPM(1, dd.DDPMConfig(train_steps=100, unet={"channels": 8})).to(F64).eval()
        abar, eps, shape = module.abar, module.eps, (2, 1, 5, 6)
    steps = dd.ddim_steps(abar, 8)
    x_T = torch.randn(shape, dtype=F64)
    target = torch.randn(shape, dtype=F64)
    ref, x0_ref, _ = _grad(eps, x_T, target, steps, "backprop")
    tight = {"tol": 1e-10, "max_iter": 40, "adjoint_tol": 1e-13, "adjoint_max_iter": 40}
    imp, x0, ok = _grad(eps, x_T, target, steps, "deq-implicit", **tight)
    assert ok.all()
    assert (x0 - x0_ref).abs().max().item() < 1e-9
    assert torch.allclose(imp, ref, rtol=1e-7, atol=1e-9), (imp - ref).abs().max()
    # The phantom gradient (1 step, tau 0.1) is a different, inexact direction: the test can fail.
    ph, _, _ = _grad(eps, x_T, target, steps, "deq-phantom", tol=1e-12, max_iter=40)
    assert not torch.allclose(ph, ref, rtol=1e-2)
    assert torch.nn.functional.cosine_similarity(ph.flatten(), ref.flatten(), dim=0) > 0


def _saved(module, steps, method, x_T, target):
    opts = InversionOptions(method, tol=1e-3, max_iter=30)

    def loss():
        x0, _, _ = reconstruct(module.eps, x_T, steps, opts)
        return (x0 - target).pow(2).sum()

    for p in module.parameters():
        p.requires_grad_(False)
    return saved_tensor_bytes(loss)


def test_saved_activations_phantom_independent_of_T_backprop_grows():
    torch.manual_seed(0)
    module = dd.DDPM(1, dd.DDPMConfig(train_steps=100, unet={"channels": 8})).eval()
    x_T = torch.randn(2, 1, 8, 8, requires_grad=True)
    target = torch.randn(2, 1, 8, 8)
    sizes = {}
    for method in ("backprop", "deq-phantom", "deq-implicit"):
        sizes[method] = [
            _saved(module, dd.ddim_steps(module.abar, n), method, x_T, target) for n in (4, 8)
        ]
    # Only S-length coefficient vectors (bytes) differ: one denoiser call's activations stay.
    assert abs(sizes["deq-phantom"][1] - sizes["deq-phantom"][0]) < 0.01 * sizes["deq-phantom"][0]
    assert sizes["backprop"][1] > 1.8 * sizes["backprop"][0]
    assert sizes["deq-phantom"][1] < sizes["backprop"][1] / 4
    # The implicit backward's VJPs need the denoiser at every state: it grows with T too.
    assert sizes["deq-implicit"][1] > 1.8 * sizes["deq-implicit"][0]


@pytest.mark.parametrize("method", ["deq-implicit", "deq-phantom", "backprop"])
def test_each_method_lowers_the_reconstruction_mse(method):
    abar = dd.alpha_bars("linear", 1000, F64)
    eps = dd.GaussianEps(abar, mean=torch.linspace(-0.8, 0.8, 16, dtype=F64), std=0.3)
    steps = dd.ddim_steps(abar, 10)
    g = torch.Generator().manual_seed(0)
    target = dd.ddim_sample(eps, torch.randn(2, 16, dtype=F64, generator=g), steps)
    options = InversionOptions(method, lr=0.1, iters=40, tol=1e-3)
    run = invert_model(eps, target, steps, options)
    assert run.mse[-1] < 0.05 * run.mse[0]
    assert (run.converged is None) == (method == "backprop")
    if run.converged is not None:
        assert run.converged > 0.9


def test_inversion_user_errors():
    with pytest.raises(ValueError, match="unknown inversion method"):
        InversionOptions("adjoint")
    with pytest.raises(ValueError, match="unknown inversion options"):
        InversionOptions.from_dict({"lrr": 1.0})
    abar = dd.alpha_bars("linear", 100, F64)
    with pytest.raises(ValueError, match="eta=0"):
        invert_model(lambda x, t: x, torch.zeros(1, 2), dd.ddim_steps(abar, 5, eta=1.0))
