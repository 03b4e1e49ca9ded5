"""A DEQ classifier in Haiku, the deq-jax way, trained under jax.jit(jax.value_and_grad).

The cell is its own ``hk.transform``; its parameters are lifted into the outer transformed
function with ``hk.lift``, and the DEQ calls the cell's pure ``apply`` inside a closure. Gradients
reach the lifted cell parameters through the implicit backward.

    .venv/bin/python examples/jax_haiku.py --steps 300
"""

from __future__ import annotations

import argparse

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _moons import moons  # examples/ is on the path when a script runs

import deqkit.jax as dkj

WIDTH = 32


class Cell(hk.Module):
    """f(z; u) = tanh(W z + u), the injection u = V x computed once outside the solve.

    W is rescaled to Frobenius norm at most 0.9, which bounds its spectral norm, so f stays a
    contraction however training moves W and every solve converges.
    """

    def __call__(self, z, u):
        width = z.shape[-1]
        w = hk.get_parameter("w", (width, width), init=hk.initializers.VarianceScaling(0.5))
        w = w * jnp.minimum(1.0, 0.9 / jnp.linalg.norm(w))
        return jnp.tanh(z @ w + u)


def forward(x):
    u = hk.Linear(WIDTH, name="inject")(x)
    cell = hk.transform(lambda z, u: Cell()(z, u))
    cell_params = hk.lift(cell.init, name="deq")(hk.next_rng_key(), u, u)
    z, sol = dkj.fixed_point(
        lambda z: cell.apply(cell_params, None, z, u),
        jnp.zeros_like(u),
        solver=dkj.Anderson(m=5),
        backward=dkj.Implicit(tol=1e-5, max_iter=40),
        tol=1e-4,
        max_iter=30,
    )
    return hk.Linear(2, name="head")(z), sol


def main(steps: int = 300, seed: int = 0, lr: float = 3e-3, batch: int = 256) -> dict:
    model = hk.transform(forward)
    x_train, y_train = moons(2048, seed)
    x_test, y_test = moons(512, seed + 1)
    key = jax.random.PRNGKey(seed)
    params = model.init(key, x_train[:batch])
    opt = optax.adam(lr)
    opt_state = opt.init(params)

    def loss_fn(params, key, x, y):
        logits, sol = model.apply(params, key, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), sol

    @jax.jit
    def train_step(params, opt_state, key, x, y):
        (loss, sol), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, key, x, y)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss, sol.nstep.mean()

    rng = np.random.default_rng(seed)
    losses = []
    for step in range(steps):
        idx = rng.integers(0, len(x_train), batch)
        key, sub = jax.random.split(key)
        params, opt_state, loss, nstep = train_step(
            params, opt_state, sub, x_train[idx], y_train[idx]
        )
        losses.append(float(loss))
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step:4d}  loss {loss:.4f}  mean nstep {float(nstep):.1f}")
    logits, sol = jax.jit(model.apply)(params, key, x_test)
    accuracy = float((logits.argmax(-1) == y_test).mean())
    print(f"test accuracy {accuracy:.3f}  forward {sol!r}")
    return {"losses": losses, "accuracy": accuracy, "status": int(sol.status)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    main(**vars(parser.parse_args()))
