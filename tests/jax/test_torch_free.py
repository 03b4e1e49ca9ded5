"""deqkit.jax and deqkit.core need no torch: a subprocess that cannot import torch runs a jitted
solve with implicit gradients, and conversion works in both directions by option record."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest

import deqkit as dk
import deqkit.jax as dkj

_BLOCKED = textwrap.dedent(
    """
    import sys

    class NoTorch:  # a meta-path finder that refuses torch, as if it were not installed
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked)")
            return None

    sys.meta_path.insert(0, NoTorch())
    import jax, jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    import deqkit.core
    import deqkit.jax as dkj

    def loss(w):
        z, sol = dkj.fixed_point(lambda z: jnp.tanh(w * z + 1.0), jnp.zeros((2, 3)), "broyden",
                                 backward=dkj.Implicit(tol=1e-10), tol=1e-10)
        return z.sum(), sol.status

    (value, status), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(0.5)
    z = float(value) / 6
    exact = z * (1 - z**2) / (1 - 0.5 * (1 - z**2))  # dz*/dw of z = tanh(w z + 1), per element
    assert status.name == "CONVERGED", status
    assert abs(float(grad) - 6 * exact) < 1e-8, (float(grad), 6 * exact)
    assert "torch" not in sys.modules
    try:
        import deqkit as dk
        dk.DEQ
    except ModuleNotFoundError as err:
        assert "torch" in str(err)
    else:
        raise AssertionError("the torch API loaded without torch")
    print("ok", status)
    """
)


def test_jax_backend_runs_with_torch_blocked():
    out = subprocess.run(
        [sys.executable, "-c", _BLOCKED], capture_output=True, text=True, timeout=240
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["ok", "CONVERGED"]


def test_import_of_deqkit_jax_does_not_import_torch():
    code = "import sys, deqkit.jax; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    "torch_obj, jax_obj",
    [
        (dk.Broyden(memory=7, update="good"), dkj.Broyden(memory=7, update="good")),
        (dk.Anderson(m=2, lam=1e-3), dkj.Anderson(m=2, lam=1e-3)),
        (dk.NewtonKrylov(krylov_dim=5), dkj.NewtonKrylov(krylov_dim=5)),
        (dk.FixedPoint(damping=0.5), dkj.FixedPoint(damping=0.5)),
    ],
)
def test_solvers_convert_both_ways_by_option_record(torch_obj, jax_obj):
    from deqkit.jax.solvers import make_solver as to_jax
    from deqkit.solvers import make_solver as to_torch

    assert type(to_torch(jax_obj)) is type(torch_obj) and to_torch(jax_obj) == torch_obj
    assert type(to_jax(torch_obj)) is type(jax_obj) and to_jax(torch_obj) == jax_obj
    # and the torch entry points take the JAX object as it is
    import torch

    sol = dk.solve(lambda z: 0.5 * z + 1.0, torch.zeros(1, 2), jax_obj, tol=1e-6)
    assert sol.status == dk.Status.CONVERGED


def test_backwards_convert_both_ways_and_shine_is_torch_only():
    from deqkit.backward import make_backward as to_torch
    from deqkit.jax.backward import make_backward as to_jax

    assert to_torch(dkj.Phantom(steps=3, damping=0.5)) == dk.Phantom(steps=3, damping=0.5)
    assert type(to_torch(dkj.OneStep())) is dk.OneStep
    implicit = to_torch(dkj.Implicit("broyden", tol=1e-7))
    assert isinstance(implicit, dk.Implicit) and implicit.tol == 1e-7
    assert to_jax(dk.Implicit(dk.Anderson(m=2))).solver == dkj.Anderson(m=2)
    assert type(to_jax(dk.Unrolled())) is dkj.Unrolled
    with pytest.raises(ValueError, match="shine.*not available in deqkit.jax"):
        to_jax("shine")
    with pytest.raises(ValueError, match="shine.*not available"):
        to_jax(dk.Shine())


def test_status_code_is_named_and_usable_under_jit(capsys):
    def run(x):
        sol = dkj.solve(
            lambda z: 0.5 * z + x, jnp.zeros((2, 1)), "fixed_point", max_iter=3, on_failure="ignore"
        )
        jax.debug.print("status {s}", s=sol.status)  # prints the name from inside jit
        return sol.status, sol.status == dkj.Status.MAX_ITER

    status, is_max = jax.jit(run)(jnp.ones((2, 1)))
    jax.effects_barrier()
    assert "status MAX_ITER" in capsys.readouterr().out
    assert bool(is_max) and status.name == "MAX_ITER" and f"{status}" == "MAX_ITER"
    assert repr(status) == "StatusCode(MAX_ITER)" and int(status) == 1
    batched, _ = jax.jit(jax.vmap(run))(jnp.ones((3, 2, 1)))
    assert str(batched) == "[MAX_ITER, MAX_ITER, MAX_ITER]"
