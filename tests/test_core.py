"""The shared core and the Solution contract: names print, Solution is immutable and its z is the
returned z, the CPU tuning seam (host vs device bookkeeping give the same numbers), _compat."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch

import deqkit as dk
from deqkit import _compat, core
from deqkit.solvers import _cpu

F64 = torch.float64


def test_status_prints_its_name_everywhere():
    for status in dk.Status:
        assert str(status) == f"{status}" == format(status, "") == status.name
        assert repr(status) == f"Status.{status.name}" and status == status.value
    sol = dk.solve(
        lambda z: 0.5 * z, torch.ones(1, 1), "fixed_point", max_iter=2, on_failure="ignore"
    )
    assert f"{sol.status}" == "MAX_ITER" and sol.message.startswith("MAX_ITER: max_iter was")


def test_core_imports_neither_torch_nor_jax():
    code = "import sys, deqkit.core; print('torch' in sys.modules, 'jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "False"], out.stderr[-2000:]


def test_registries_match_the_backends():
    from deqkit.backward import BACKWARDS
    from deqkit.solvers import SOLVERS

    assert tuple(SOLVERS) == core.SOLVER_NAMES == tuple(core.SOLVER_OPTIONS)
    assert set(BACKWARDS) == set(core.BACKWARD_NAMES) == set(core.BACKWARD_OPTIONS)
    for name, record in {**core.SOLVER_OPTIONS, **core.BACKWARD_OPTIONS}.items():
        assert record.name == name
    assert dk.DEFAULTS is core.DEFAULTS and dk.SolverError is core.SolverError


def test_solution_is_immutable_and_its_z_is_the_returned_z():
    w = torch.tensor(0.5, dtype=F64, requires_grad=True)
    z, sol = dk.fixed_point(lambda z: w * z + 1.0, torch.zeros(1, 1, dtype=F64), tol=1e-12)
    assert sol.z is z and sol.z.requires_grad  # loss(sol.z) gets the gradient too
    with pytest.raises(dataclasses.FrozenInstanceError):
        sol.z = z.detach()
    assert sol.backward is None
    sol.z.sum().backward()  # the adjoint Solution arrives late, on the object the caller holds
    assert sol.backward is not None and sol.backward.status == dk.Status.CONVERGED
    assert w.grad.item() == pytest.approx(4.0)


def test_layer_outputs_are_grouped_and_old_names_warn():
    cell = torch.nn.Linear(3, 3).double()
    deq = dk.DEQ(
        lambda z, x: torch.tanh(0.5 * cell(z) + x), jac_reg_prob=1.0, n_states=2,
        init=torch.nn.Linear(3, 3).double(), tol=1e-8,
    )  # fmt: skip
    z, sol = deq(torch.randn(4, 3, dtype=F64))
    out = sol.outputs
    assert isinstance(out, dk.LayerOutputs) and out.states[-1] is z
    assert out.jac_loss.requires_grad and out.skip_loss.requires_grad
    with pytest.warns(DeprecationWarning, match="outputs.jac_loss"):
        assert sol.jac_loss is out.jac_loss
    with pytest.warns(DeprecationWarning, match="outputs.states"):
        assert sol.states is out.states
    plain = dk.solve(lambda z: 0.5 * z, torch.ones(1, 1))
    assert plain.outputs == dk.LayerOutputs() and plain.state is None


def test_tracing_and_pretraining_restore_the_layer():
    deq = dk.DEQ(lambda z, x: 0.5 * z + x, tol=1e-8)
    with deq.tracing():
        assert deq(torch.ones(2, 1))[1].trace is not None
    with deq.pretraining(3):
        assert deq(torch.ones(2, 1))[1].nfev == 3
    assert deq.trace is False and deq.pretrain_steps == 0
    assert deq(torch.ones(2, 1))[1].trace is None


@pytest.mark.parametrize(
    "solver",
    [dk.FixedPoint(damping=0.8), dk.Anderson(m=3), dk.Broyden(), dk.Broyden(update="good")],
)
def test_device_bookkeeping_gives_the_host_numbers(solver, monkeypatch):
    """The bookkeeping for non-CPU devices (torch on the device) runs here on the CPU."""
    gen = torch.Generator().manual_seed(0)
    w = 0.6 * torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=F64))[0]
    x = torch.randn(5, 6, generator=gen, dtype=F64)
    x[0] *= 0.01  # converges first: freezing and per-sample stopping are exercised

    def f(z):
        return torch.tanh(z @ w.T + x)

    host = dk.solve(f, torch.zeros(5, 6, dtype=F64), solver, tol=1e-10, max_iter=100, trace=True)
    monkeypatch.setitem(_cpu._force_device, "on", True)
    device = dk.solve(f, torch.zeros(5, 6, dtype=F64), solver, tol=1e-10, max_iter=100, trace=True)
    assert device.nstep.tolist() == host.nstep.tolist() and device.nfev == host.nfev
    assert device.status == host.status == dk.Status.CONVERGED
    torch.testing.assert_close(device.z, host.z, rtol=0, atol=1e-12)
    torch.testing.assert_close(device.trace, host.trace, rtol=1e-9, atol=1e-14)


def test_compat_private_torch_apis_still_behave():
    """Each private PyTorch API in deqkit._compat, checked against this torch version."""
    leaves, spec = _compat.pytree.tree_flatten({"a": torch.ones(1), "b": (torch.zeros(2),)})
    assert len(leaves) == 2 and _compat.pytree.tree_unflatten(leaves, spec)["b"][0].shape == (2,)
    lin = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(2, 2))
    spec_lin = torch.nn.utils.parametrizations.spectral_norm(torch.nn.Linear(2, 2))
    found = [type(p) for m in (lin, spec_lin) for p in m.parametrizations.weight]
    assert all(issubclass(t, _compat.NORM_PARAMETRIZATIONS) for t in found) and len(found) == 2
    t = torch.zeros(3, 2)
    assert not _compat.tensor_is_view(t) and _compat.tensor_is_view(t[:, 0])
    assert _compat.tensor_is_view(t.view(6)) and not _compat.tensor_is_view(t.clone())
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    _compat.set_scheduler_last_lr(sched, [0.25])
    assert sched.get_last_lr() == [0.25]
