"""Solver hooks: the pool of history buffers (`release`: reuse never changes results, never shares
a live buffer) and the residual hand-off (`residual`: exactly f(z) − z of the returned iterate)."""

import torch

import deqkit as dk
from deqkit.solvers import _cpu
from deqkit.solvers._cpu import history_buffer, release

clear_pool = dk.clear_buffer_pool

F64 = torch.float64


def _tanh_map(seed):
    gen = torch.Generator().manual_seed(seed)
    w = 0.8 * torch.linalg.qr(torch.randn(8, 8, generator=gen, dtype=F64))[0]
    x = torch.randn(3, 8, generator=gen, dtype=F64)
    return lambda z: torch.tanh(z @ w.T + x)


def test_reused_buffers_give_bitwise_identical_solves():
    f = _tanh_map(0)
    clear_pool()
    z0 = torch.zeros(3, 8, dtype=F64)
    for solver in (dk.Anderson(), dk.Broyden(), dk.Broyden(update="good")):
        first = dk.solve(f, z0, solver, tol=1e-10)
        again = dk.solve(f, z0, solver, tol=1e-10)  # runs on the buffers the first released
        assert torch.equal(first.z, again.z) and first.nfev == again.nfev


def test_nested_solves_do_not_share_buffers():
    """A solve inside f (same shapes, same solver) must get buffers of its own."""
    inner_f = _tanh_map(1)
    z0 = torch.zeros(3, 8, dtype=F64)
    clear_pool()
    inner = dk.solve(inner_f, z0, "broyden", tol=1e-12).z

    def outer(z):
        return 0.5 * torch.tanh(z) + dk.solve(inner_f, z0, "broyden", tol=1e-12).z

    nested = dk.solve(outer, z0, "broyden", tol=1e-10)
    plain = dk.solve(lambda z: 0.5 * torch.tanh(z) + inner, z0, "broyden", tol=1e-10)
    torch.testing.assert_close(nested.z, plain.z, atol=1e-10, rtol=0)


def test_pool_hands_out_each_buffer_once_and_only_without_autograd():
    like = torch.zeros(2, 5)
    clear_pool()
    with torch.no_grad():
        a = history_buffer(like, 3)
        release(a)
        assert history_buffer(like, 3) is a
        assert history_buffer(like, 3) is not a  # taken already
        release(a[:, :1])  # views are never pooled
        assert history_buffer(like, 3) is not a
    release(a)  # autograd recording: nothing is kept
    with torch.no_grad():
        assert history_buffer(like, 3) is not a


def test_pool_is_bounded_and_can_be_turned_off():
    old = dk.set_buffer_pool_limit(1000)
    try:
        clear_pool()
        with torch.no_grad():
            small, big = torch.empty(10, 10), torch.empty(20, 20)  # 400 and 1600 bytes
            release(small)
            release(big)  # larger than the bound: not kept
            held = sum(b.nbytes for kept in _cpu._pool().values() for b in kept)
            assert held == 400
            assert dk.set_buffer_pool_limit(0) == 1000  # off: the pool empties, keeps nothing
            assert not _cpu._pool()
            release(small)
            assert history_buffer(small.view(10, 10), 1) is not small and not _cpu._pool()
    finally:
        dk.set_buffer_pool_limit(old)
    clear_pool()


def test_solver_residual_hook_is_f_minus_z_of_the_returned_iterate():
    """The loop trusts ``Solver.residual``: it must be exactly f(z) − z of what step returned."""
    f = _tanh_map(2)
    z0 = torch.zeros(3, 8, dtype=F64)
    for solver in (dk.Anderson(m=3), dk.Broyden(), dk.Broyden(update="good", line_search=True)):
        with torch.no_grad():
            memory = solver.init(z0, f(z0))
            z, fz = z0, f(z0)
            active = torch.ones(3, dtype=torch.bool)
            for _ in range(6):
                z, fz, memory = solver.step(f, z, fz, memory, active)
                torch.testing.assert_close(solver.residual(memory), fz - z, atol=0, rtol=0)
