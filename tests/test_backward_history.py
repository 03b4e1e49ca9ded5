"""The implicit backward walks f's own graph, not the history of f's older inputs.

A recurrence of DEQs (h_t = root of a map driven by h_{t−1}, the incremental RNN) gives f a
non-leaf input with a T-step history. Each adjoint VJP used to walk that whole history, so the
backward cost O(T²); f now sees detached copies of such inputs (``CutHistory``) and the
gradient for them flows into their history once. These tests check the graph each VJP walks,
and that the gradients stay exact (float64, against converged unrolls and finite differences).
"""

from __future__ import annotations

import pytest
import torch

import deqkit as dk
from deqkit._compat import next_sequence_nr, node_sequence_nr
from deqkit._exact_adjoint import CutHistory

F64 = torch.float64


def _graph_size(t: torch.Tensor) -> int:
    seen, stack = set(), [t.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(fn for fn, _ in node.next_functions)
    return len(seen)


def _recurrence(T, w, enc, x, backward="implicit", solver="anderson"):
    """h_t = root of z = tanh(z W^T + h_{t-1} + enc(x_t)); returns the stacked states."""
    deq = dk.DEQ(lambda z, h, u: torch.tanh(z @ w.T + h + u), solver=solver,
                 backward=backward, tol=1e-12, max_iter=200)  # fmt: skip
    h = torch.zeros(x.shape[0], w.shape[0], dtype=F64)
    drive = enc(x)  # (B, T, H): a non-leaf made before every solve
    states = []
    for t in range(T):
        h, _ = deq(h, drive[:, t])
        states.append(h)
    return torch.stack(states, 1)


def _unrolled(T, w, enc, x, iters=300):
    h = torch.zeros(x.shape[0], w.shape[0], dtype=F64)
    drive = enc(x)
    states = []
    for t in range(T):
        z = torch.zeros_like(h)
        for _ in range(iters):
            z = torch.tanh(z @ w.T + h + drive[:, t])
        h = z
        states.append(h)
    return torch.stack(states, 1)


def _problem(T=6, H=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.nn.Parameter(0.3 * torch.randn(H, H, dtype=F64, generator=g))
    enc = torch.nn.Linear(2, H).double()
    x = torch.randn(3, T, 2, dtype=F64, generator=g, requires_grad=True)
    return w, enc, x


@pytest.mark.parametrize("T", [3, 30])
def test_each_adjoint_vjp_walks_a_graph_that_does_not_grow_with_the_recurrence(T, monkeypatch):
    w, enc, x = _problem(T)
    hs = _recurrence(T, w, enc, x)
    sizes = []
    real_grad = torch.autograd.grad

    def recording(outputs, *args, **kwargs):
        sizes.append(_graph_size(outputs if torch.is_tensor(outputs) else outputs[0]))
        return real_grad(outputs, *args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", recording)
    hs[:, -1].sum().backward()
    # Before: the last step's VJPs walked every earlier step (≈ 7 nodes per step, 200+ at T = 30).
    assert sizes and max(sizes) <= 12, sizes


def test_recurrence_gradients_match_a_converged_unroll_in_float64():
    w, enc, x = _problem()
    loss = (_recurrence(6, w, enc, x) ** 2).sum()
    got = torch.autograd.grad(loss, [w, enc.weight, enc.bias, x])
    ref_loss = (_unrolled(6, w, enc, x) ** 2).sum()
    ref = torch.autograd.grad(ref_loss, [w, enc.weight, enc.bias, x])
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_cut_input_sharing_leaves_with_f_is_counted_once():
    # u = w-dependent non-leaf, and f also uses w directly: w's gradient has both paths, once.
    w = torch.tensor([[0.4]], dtype=F64, requires_grad=True)
    u = 2.0 * w + 1.0  # made before the solve, depends on w
    z, _ = dk.fixed_point(lambda z: w * z + u, torch.zeros(1, 1, dtype=F64), tol=1e-13)
    (g,) = torch.autograd.grad(z.sum(), w)
    # z* = (2w + 1)/(1 − w): dz*/dw = 2/(1 − w) + (2w + 1)/(1 − w)^2
    exact = 2 / 0.6 + 1.8 / 0.36
    assert g.item() == pytest.approx(exact, rel=1e-10)


def test_recurrence_gradient_matches_finite_differences():
    w, enc, x = _problem(T=4)
    direction = torch.randn_like(w)

    def loss(weight):
        with torch.no_grad():
            return (_unrolled(4, weight, enc, x, iters=400) ** 3).sum().item()

    (g,) = torch.autograd.grad((_recurrence(4, w, enc, x) ** 3).sum(), w)
    eps = 1e-6
    fd = (loss(w + eps * direction) - loss(w - eps * direction)) / (2 * eps)
    assert (g * direction).sum().item() == pytest.approx(fd, rel=1e-6)


class _Double(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t):
        return 2 * t

    @staticmethod
    def backward(ctx, grad):
        return 2 * grad


def test_an_input_reaching_f_through_a_custom_function_falls_back_exactly():
    # A custom autograd.Function's inputs bypass the torch-function cut: the old node is found
    # and the backward uses f's whole graph (one more evaluation of f), with the same gradient.
    w = torch.tensor([[0.5]], dtype=F64, requires_grad=True)
    x = 3.0 * torch.ones(1, 1, dtype=F64, requires_grad=True)
    calls = []

    def f(z):
        calls.append(1)
        return w * z + _Double.apply(x)

    z, _ = dk.fixed_point(f, torch.zeros(1, 1, dtype=F64), tol=1e-13)
    n = len(calls)
    (gw,) = torch.autograd.grad(z.sum(), w)  # z* = 2x/(1 − w) = 12, dz*/dw = 2x/(1 − w)^2
    assert gw.item() == pytest.approx(24.0, rel=1e-10)
    assert n >= 2


def test_cut_history_copies_old_non_leaves_only():
    leaf = torch.ones(2, requires_grad=True)
    old = leaf * 2
    start = next_sequence_nr()
    with CutHistory(start) as cut:
        new = old + leaf  # old is cut, the leaf kept
        out = new * old  # new is f's own, old reuses its copy
    assert len(cut.cut) == 1
    original, copy = cut.cut[id(old)]
    assert original is old and copy.is_leaf and copy.requires_grad
    leaves, outer, copies = cut.split([leaf, copy])
    assert leaves == [leaf] and outer == [old] and copies == [copy]
    nodes = [out.grad_fn, *(fn for fn, _ in out.grad_fn.next_functions)]
    assert all(node_sequence_nr(n) >= start for n in nodes if not hasattr(n, "variable"))
    assert out.grad_fn.next_functions[1][0].variable is copy  # not old's MulBackward


@pytest.mark.parametrize("computed_input", [False, True])
def test_the_node_frees_f_graph_unless_retained(computed_input):
    # Like every autograd node: a second backward needs retain_graph=True on the first.
    w = torch.tensor([[0.5]], dtype=F64, requires_grad=True)
    x = 2.0 * torch.ones(1, 1, dtype=F64, requires_grad=True) if computed_input else 1.0
    z, _ = dk.fixed_point(lambda z: w * z + x, torch.zeros(1, 1, dtype=F64), tol=1e-13)
    z.sum().backward(retain_graph=True)
    z.sum().backward()
    exact = (2.0 if computed_input else 1.0) / 0.25  # x/(1 − w)^2, twice
    assert w.grad.item() == pytest.approx(2 * exact, rel=1e-10)
    with pytest.raises(RuntimeError, match="second time"):
        z.sum().backward()


def test_a_compiled_f_with_a_computed_input_gives_the_eager_gradients():
    torch.manual_seed(0)
    cell = torch.nn.Linear(4, 4).double()
    enc = torch.nn.Linear(3, 4).double()
    inp = torch.randn(2, 3, dtype=F64)

    def grads(f):
        z, _ = dk.DEQ(lambda z, x: torch.tanh(0.5 * f(z) + x), tol=1e-12, max_iter=200)(enc(inp))
        return torch.autograd.grad((z**2).sum(), [cell.weight, enc.weight])

    eager = grads(cell)
    compiled = grads(torch.compile(cell, backend="eager"))
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
