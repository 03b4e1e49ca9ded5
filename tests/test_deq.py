"""The DEQ layer and entry points: modes, re-entrancy, memory, failure policy, bad input."""

import gc
import warnings

import pytest
import torch
from problems import TanhCell

import deqkit as dk

F64 = torch.float64


class Model(torch.nn.Module):
    def __init__(self, backward="implicit", max_iter=30, dim=16, **kwargs):
        super().__init__()
        self.inject = torch.nn.Linear(8, dim)
        self.deq = dk.DEQ(
            TanhCell(dim=dim, in_dim=dim, dtype=torch.float32),
            "anderson",
            backward,
            tol=1e-6,
            max_iter=max_iter,
            **kwargs,
        )
        self.head = torch.nn.Linear(dim, 3)

    def forward(self, x):
        z, sol = self.deq(self.inject(x))
        return self.head(z), sol


def test_eval_mode_is_differentiable_when_grad_is_enabled():
    model = Model().eval()
    x = torch.randn(4, 8, requires_grad=True)
    out, _ = model(x)
    assert out.requires_grad
    (g,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_no_grad_gives_plain_tensors():
    model = Model()
    with torch.no_grad():
        out, sol = model(torch.randn(4, 8))
    assert not out.requires_grad and sol.status == dk.Status.CONVERGED


def test_eval_max_iter_caps_eval_only():
    model = Model(max_iter=30, eval_max_iter=3, on_failure="ignore")
    x = torch.randn(4, 8)
    _, sol_train = model(x)
    model.eval()
    _, sol_eval = model(x)
    assert sol_eval.nstep.max() == 3 and sol_train.nstep.max() > 3


@pytest.mark.parametrize("backward", ["implicit", "phantom", "one_step", "unrolled"])
def test_one_layer_called_twice_in_a_forward(backward):
    model = Model(backward)
    x = torch.randn(4, 8)
    z1, s1 = model.deq(model.inject(x))
    z2, s2 = model.deq(z1)
    (z1.sum() + z2.pow(2).sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.deq.parameters())
    if backward == "implicit":
        assert s1.backward is not None and s2.backward is not None


def test_implicit_gradient_equals_finite_difference_through_a_layer():
    cell = TanhCell(dim=4, in_dim=4)
    deq = dk.DEQ(cell, tol=1e-12, max_iter=100, backward=dk.Implicit(tol=1e-12))
    x = torch.randn(3, 4, dtype=F64)
    z, _ = deq(x)
    (z.sin().sum()).backward()
    eps = 1e-6
    with torch.no_grad():
        for i, j in [(0, 1), (2, 3)]:
            cell.W[i, j] += eps
            up = deq(x)[0].sin().sum()
            cell.W[i, j] -= 2 * eps
            down = deq(x)[0].sin().sum()
            cell.W[i, j] += eps
            assert cell.W.grad[i, j].item() == pytest.approx(
                ((up - down) / (2 * eps)).item(), rel=1e-6
            )


def _saved_bytes(max_iter, backward):
    torch.manual_seed(0)
    model = Model(backward, max_iter=max_iter, dim=64, on_failure="ignore")
    model.deq.tol = 1e-30  # never converge: every configuration runs its full budget
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, sol = model(torch.randn(32, 8))
    assert sol.nstep.max() == max_iter
    out.sum().backward()
    return total


def test_saved_memory_does_not_grow_with_max_iter_under_implicit():
    small, large = _saved_bytes(5, "implicit"), _saved_bytes(40, "implicit")
    assert large == small
    unrolled_small, unrolled_large = _saved_bytes(5, "unrolled"), _saved_bytes(40, "unrolled")
    assert unrolled_large > 4 * unrolled_small  # the check above can fail: unrolling does grow


def _live_tensors():
    gc.collect()
    return sum(1 for o in gc.get_objects() if torch.is_tensor(o))


def test_training_steps_leak_no_tensors_or_hooks():
    torch.manual_seed(0)
    model = Model(dim=8)
    model.deq.tol = 1e-4
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    counts = []
    for step in range(200):
        out, _ = model(x)
        loss = torch.nn.functional.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in (20, 199):
            counts.append(_live_tensors())
    assert counts[1] <= counts[0]
    assert loss.item() < 1.0


def test_f_with_wrong_shape_or_dtype_raises_at_once():
    z0 = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"f\(z\) leaf 0 has shape \(2, 4\) but z has \(2, 3\)"):
        dk.solve(lambda z: torch.zeros(2, 4), z0)
    with pytest.raises(TypeError, match="dtype torch.float64 but z has torch.float32"):
        dk.solve(lambda z: z.double(), z0)
    with pytest.raises(ValueError, match="structure"):
        dk.fixed_point(lambda z: (z, z), z0)


def test_z0_with_wrong_batch_or_nan_raises():
    deq = dk.DEQ(TanhCell(dim=3, in_dim=3, dtype=torch.float32))
    with pytest.raises(ValueError, match="z0 has batch size 5 but x has batch size 2"):
        deq(torch.randn(2, 3), z0=torch.zeros(5, 3))
    with pytest.raises(ValueError, match="z0 contains NaN"):
        dk.solve(lambda z: z, torch.full((2, 3), float("nan")))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"tol": -1.0}, ValueError, "tol must be > 0"),
        ({"tol": "small"}, TypeError, "tol must be a number"),
        ({"max_iter": 0}, ValueError, "max_iter must be >= 1"),
        ({"stop_mode": "relative"}, ValueError, "stop_mode must be one of"),
        ({"on_failure": "crash"}, ValueError, "on_failure must be one of"),
        ({"solver": "newton"}, ValueError, "unknown solver 'newton'"),
        ({"trace": 1}, TypeError, "trace must be a bool"),
    ],
)
def test_bad_options_name_the_offender(kwargs, error, message):
    with pytest.raises(error, match=message):
        dk.solve(lambda z: 0.5 * z, torch.ones(2, 2), **kwargs)
    with pytest.raises(error, match=message):
        dk.DEQ(lambda z, x: z, **kwargs)


def test_failure_policy_warn_raise_ignore():
    f = lambda z: 0.99 * z + 1.0  # noqa: E731
    with pytest.warns(dk.DEQWarning, match="MAX_ITER"):
        dk.solve(f, torch.zeros(1, 2), "fixed_point", max_iter=3)
    with pytest.raises(dk.SolverError) as info:
        dk.solve(f, torch.zeros(1, 2), "fixed_point", max_iter=3, on_failure="raise")
    assert info.value.status == dk.Status.MAX_ITER
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sol = dk.solve(f, torch.zeros(1, 2), "fixed_point", max_iter=3, on_failure="ignore")
    assert sol.status == dk.Status.MAX_ITER


def test_autocast_bf16_cell_solves_in_float32():
    model = Model()
    x = torch.randn(4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, sol = model(x)
    assert sol.z.dtype == torch.bfloat16  # the state follows the bf16 injection
    assert sol.residual.dtype == torch.float32  # while the solver works in float32
    assert sol.residual.max() < 1e-2
    out.float().sum().backward()
    assert torch.isfinite(model.deq.cell.W.grad).all()


def test_compiled_cell_gives_the_same_fixed_point():
    cell = TanhCell(dim=6, in_dim=6, dtype=torch.float32)
    x = torch.randn(4, 6)
    eager, _ = dk.DEQ(cell, tol=1e-6)(x)
    compiled, _ = dk.DEQ(torch.compile(cell, backend="eager"), tol=1e-6)(x)
    torch.testing.assert_close(compiled, eager)


def test_pytree_dict_state_through_the_layer():
    def cell(z, x):
        return {"h": torch.tanh(0.5 * z["h"] + x), "c": 0.5 * z["c"] + z["h"].mean(1, keepdim=True)}

    x = torch.randn(3, 4, requires_grad=True)
    z, sol = dk.DEQ(cell, tol=1e-6)(x, z0={"h": torch.zeros(3, 4), "c": torch.zeros(3, 1)})
    assert set(z) == {"h", "c"} and sol.status == dk.Status.CONVERGED
    torch.testing.assert_close(z["c"], 2 * z["h"].mean(1, keepdim=True), atol=1e-5, rtol=0)
    (z["h"].sum() + z["c"].sum()).backward()
    assert torch.isfinite(x.grad).all()
