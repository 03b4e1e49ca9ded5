"""deq-jax's model: a Haiku transformer block with input injection solved as a DEQ, trained as a
character-level language model on a real corpus bundled with Python (``pydoc_data.topics``, the
465 K characters of the interpreter's own help texts) on CPU.

The block f(z; u) = LN(h + MLP(LN(h))), h = z + u + Attn(LN(z + u)) (causal) is one
``hk.transform``ed function whose parameters are lifted into the outer model; z* = f(z*; u) is
found with Anderson acceleration and differentiated implicitly. The yardstick is the unigram
entropy of the training text: the loss of the best model that ignores context.

    .venv/bin/python examples/jax_transformer.py --steps 300
"""

from __future__ import annotations

import argparse
import math
import time

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

import deqkit.jax as dkj


def corpus() -> str:
    """The interpreter's help topics, in a fixed order (sorted keys)."""
    from pydoc_data.topics import topics

    return "\n".join(topics[key] for key in sorted(topics))


def unigram_entropy(ids: np.ndarray, vocab: int) -> float:
    """Entropy (nats per character) of the character frequencies: a context-free model's loss."""
    p = np.bincount(ids, minlength=vocab) / len(ids)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


class Block(hk.Module):
    """A pre-LN causal transformer block on z + u, closed by a LayerNorm (keeps z* bounded)."""

    def __init__(self, heads: int, name: str | None = None):
        super().__init__(name=name)
        self.heads = heads

    def __call__(self, z, u):
        width = z.shape[-1]
        h = z + u
        ln = lambda name: hk.LayerNorm(-1, create_scale=True, create_offset=True, name=name)  # noqa: E731
        attn = hk.MultiHeadAttention(
            num_heads=self.heads,
            key_size=width // self.heads,
            w_init=hk.initializers.VarianceScaling(0.5),
        )
        a = ln("ln_attn")(h)
        mask = jnp.tril(jnp.ones((z.shape[1], z.shape[1]), bool))[None, None]
        h = h + attn(a, a, a, mask=mask)
        m = ln("ln_mlp")(h)
        m = hk.Linear(2 * width, w_init=hk.initializers.VarianceScaling(0.5))(m)
        h = h + hk.Linear(width, w_init=hk.initializers.VarianceScaling(0.5))(jax.nn.gelu(m))
        return ln("ln_out")(h)


def build(vocab: int, seq_len: int, width: int, heads: int, max_iter: int, tol: float, solver: str):
    def forward(tokens):
        embed = hk.Embed(vocab, width, name="embed")(tokens)
        pos = hk.get_parameter("pos", (seq_len, width), init=hk.initializers.RandomNormal(0.02))
        u = hk.Linear(width, name="inject")(embed + pos)
        block = hk.transform(lambda z, u: Block(heads)(z, u))
        block_params = hk.lift(block.init, name="deq")(hk.next_rng_key(), u, u)
        z, sol = dkj.fixed_point(
            lambda z: block.apply(block_params, None, z, u),
            jnp.zeros_like(u),
            solver=solver,
            backward=dkj.Implicit(solver=solver, tol=tol, max_iter=max_iter),
            tol=tol,
            max_iter=max_iter,
        )
        return hk.Linear(vocab, name="head")(z), sol

    return hk.transform(forward)


def batches(ids: np.ndarray, batch: int, seq_len: int, rng: np.random.Generator):
    while True:
        start = rng.integers(0, len(ids) - seq_len - 1, batch)
        window = np.stack([ids[s : s + seq_len + 1] for s in start])
        yield window[:, :-1], window[:, 1:]


def main(
    steps: int = 300,
    batch: int = 32,
    seq_len: int = 64,
    width: int = 64,
    heads: int = 4,
    max_iter: int = 12,
    tol: float = 1e-3,
    lr: float = 1e-3,
    eval_batches: int = 8,
    solver: str = "anderson",
    seed: int = 0,
) -> dict:
    text = corpus()
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    ids = np.fromiter((lookup[c] for c in text), np.int32, len(text))
    split = int(0.9 * len(ids))
    train_ids, test_ids = ids[:split], ids[split:]
    baseline = unigram_entropy(train_ids, len(chars))
    model = build(len(chars), seq_len, width, heads, max_iter, tol, solver)
    key = jax.random.PRNGKey(seed)
    rng = np.random.default_rng(seed)
    train = batches(train_ids, batch, seq_len, rng)
    params = model.init(key, next(train)[0])
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))
    opt_state = opt.init(params)

    def loss_fn(params, key, x, y):
        logits, sol = model.apply(params, key, x)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, sol

    @jax.jit
    def train_step(params, opt_state, key, x, y):
        (loss, sol), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, key, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        stats = {"nstep": sol.nstep.mean(), "residual": sol.residual.max()}
        return optax.apply_updates(params, updates), opt_state, loss, stats

    evaluate = jax.jit(loss_fn)
    print(f"corpus {len(text)} chars, vocab {len(chars)}, unigram entropy {baseline:.4f} nats")
    losses, start = [], time.time()
    for step in range(steps):
        x, y = next(train)
        key, sub = jax.random.split(key)
        params, opt_state, loss, stats = train_step(params, opt_state, sub, x, y)
        losses.append(float(loss))
        if step % 25 == 0 or step == steps - 1:
            print(
                f"step {step:4d}  loss {float(loss):.4f}  nstep {float(stats['nstep']):.1f}  "
                f"max residual {float(stats['residual']):.1e}  {time.time() - start:.0f}s"
            )
    test = batches(test_ids, batch, seq_len, np.random.default_rng(seed + 1))
    held_out = [float(evaluate(params, key, *next(test))[0]) for _ in range(eval_batches)]
    test_loss = float(np.mean(held_out)) if held_out else float("nan")
    print(
        f"held-out loss {test_loss:.4f} nats/char ({test_loss / math.log(2):.3f} bits) vs "
        f"unigram entropy {baseline:.4f} nats ({baseline / math.log(2):.3f} bits)"
    )
    return {"losses": losses, "test_loss": test_loss, "baseline": baseline}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--max-iter", type=int, default=12)
    parser.add_argument("--solver", default="anderson")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    main(**{k.replace("-", "_"): v for k, v in vars(parser.parse_args()).items()})
