"""A DEQ classifier in Flax NNX: the cell's state is split off and closed over by f.

``nnx.split`` turns the cell into a graph definition and a state of arrays; f rebuilds the cell
from them with ``nnx.merge``, so the solver sees a pure function and gradients reach the state.

    .venv/bin/python examples/jax_flax.py --steps 300
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _moons import moons  # examples/ is on the path when a script runs
from flax import nnx

import deqkit.jax as dkj

WIDTH = 32


class Cell(nnx.Module):
    """f(z; u) = tanh(W z + u), W rescaled to Frobenius norm ≤ 0.9 (a contraction)."""

    def __init__(self, rngs: nnx.Rngs):
        self.w = nnx.Param(
            jax.random.normal(rngs.params(), (WIDTH, WIDTH)) * (0.5 / np.sqrt(WIDTH))
        )

    def __call__(self, z, u):
        w = self.w[...]
        return jnp.tanh(z @ (w * jnp.minimum(1.0, 0.9 / jnp.linalg.norm(w))) + u)


class DEQClassifier(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.inject = nnx.Linear(2, WIDTH, rngs=rngs)
        self.cell = Cell(rngs)
        self.head = nnx.Linear(WIDTH, 2, rngs=rngs)

    def __call__(self, x):
        u = self.inject(x)
        graphdef, state = nnx.split(self.cell)
        z, sol = dkj.fixed_point(
            lambda z: nnx.merge(graphdef, state)(z, u),
            jnp.zeros_like(u),
            solver=dkj.Anderson(m=5),
            backward=dkj.Implicit(tol=1e-5, max_iter=40),
            max_iter=30,
        )
        return self.head(z), sol


def main(steps: int = 300, seed: int = 0, lr: float = 3e-3, batch: int = 256) -> dict:
    model = DEQClassifier(nnx.Rngs(seed))
    x_train, y_train = moons(2048, seed)
    x_test, y_test = moons(512, seed + 1)
    optimizer = nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)

    def loss_fn(model, x, y):
        logits, sol = model(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), sol

    @nnx.jit
    def train_step(model, optimizer, x, y):
        (loss, sol), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, x, y)
        optimizer.update(model, grads)
        return loss, sol.nstep.mean()

    rng = np.random.default_rng(seed)
    losses = []
    for step in range(steps):
        idx = rng.integers(0, len(x_train), batch)
        loss, nstep = train_step(model, optimizer, x_train[idx], y_train[idx])
        losses.append(float(loss))
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step:4d}  loss {loss:.4f}  mean nstep {float(nstep):.1f}")
    logits, sol = nnx.jit(lambda m, x: m(x))(model, x_test)
    accuracy = float((logits.argmax(-1) == y_test).mean())
    print(f"test accuracy {accuracy:.3f}  forward {sol!r}")
    return {"losses": losses, "accuracy": accuracy, "status": int(sol.status)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    main(**vars(parser.parse_args()))
