"""A DEQ classifier in Equinox: the model is a pytree, f closes over it, eqx.filter_jit trains it.

.venv/bin/python examples/jax_equinox.py --steps 300
"""

from __future__ import annotations

import argparse

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _moons import moons  # examples/ is on the path when a script runs

import deqkit.jax as dkj

WIDTH = 32


class DEQClassifier(eqx.Module):
    """x → u = V x → z* = tanh(W z* + u) → logits = H z*.

    W is rescaled to Frobenius norm at most 0.9 so the cell stays a contraction during training.
    """

    inject: eqx.nn.Linear
    w: jax.Array
    head: eqx.nn.Linear

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.inject = eqx.nn.Linear(2, WIDTH, key=k1)
        self.w = jax.random.normal(k2, (WIDTH, WIDTH)) * (0.5 / np.sqrt(WIDTH))
        self.head = eqx.nn.Linear(WIDTH, 2, key=k3)

    def __call__(self, x):
        u = jax.vmap(self.inject)(x)
        w = self.w * jnp.minimum(1.0, 0.9 / jnp.linalg.norm(self.w))
        z, sol = dkj.fixed_point(
            lambda z: jnp.tanh(z @ w + u),
            jnp.zeros_like(u),
            solver=dkj.Broyden(memory=10),
            backward=dkj.Implicit(tol=1e-5, max_iter=40),
            max_iter=30,
        )
        return jax.vmap(self.head)(z), sol


def main(steps: int = 300, seed: int = 0, lr: float = 3e-3, batch: int = 256) -> dict:
    model = DEQClassifier(jax.random.PRNGKey(seed))
    x_train, y_train = moons(2048, seed)
    x_test, y_test = moons(512, seed + 1)
    opt = optax.adam(lr)
    opt_state = opt.init(eqx.filter(model, eqx.is_inexact_array))

    def loss_fn(model, x, y):
        logits, sol = model(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), sol

    @eqx.filter_jit
    def train_step(model, opt_state, x, y):
        (loss, sol), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(model, x, y)
        updates, opt_state = opt.update(grads, opt_state)
        return eqx.apply_updates(model, updates), opt_state, loss, sol.nstep.mean()

    rng = np.random.default_rng(seed)
    losses = []
    for step in range(steps):
        idx = rng.integers(0, len(x_train), batch)
        model, opt_state, loss, nstep = train_step(model, opt_state, x_train[idx], y_train[idx])
        losses.append(float(loss))
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step:4d}  loss {loss:.4f}  mean nstep {float(nstep):.1f}")
    logits, sol = eqx.filter_jit(lambda m, x: m(x))(model, x_test)
    accuracy = float((logits.argmax(-1) == y_test).mean())
    print(f"test accuracy {accuracy:.3f}  forward {sol!r}")
    return {"losses": losses, "accuracy": accuracy, "status": int(sol.status)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    main(**vars(parser.parse_args()))
