"""Problems (a), (b), (d) of ``problems.py`` as JAX functions with the very same weights.

``make(key)`` returns ``(apply, params, x, z0, torch_problem)``: ``apply(params, z, x)`` maps a
(B, D) float32 state to one like it (the transformer state (B, T, d) is flattened to (B, T·d), as
deqkit.jax does itself); the weights are the torch problem's, so torch and JAX solve the same f.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import problems


def _np(t):
    return np.asarray(t.detach().numpy())


def _layer_norm(h, w, b, eps=1e-5):
    mean = h.mean(-1, keepdims=True)
    var = ((h - mean) ** 2).mean(-1, keepdims=True)
    return (h - mean) / jnp.sqrt(var + eps) * w + b


def make(key: str):
    """``(apply, params, x, z0, torch_problem)`` of problem ``key``."""
    prob = problems.make(key)
    cell = prob.cell
    x = jnp.asarray(_np(prob.x))
    if key in "ad":
        params = {"W": jnp.asarray(_np(cell.weight)), "U": jnp.asarray(_np(cell.inject))}

        def apply(p, z, x):
            return jnp.tanh(z @ p["W"].T + x @ p["U"].T)

        z0 = jnp.zeros(prob.z0.shape, jnp.float32)
    elif key == "b":
        b, t, d = prob.z0.shape
        heads = cell.heads
        names = ("qkv", "out", "ff1", "ff2")
        params = {n: jnp.asarray(_np(getattr(cell, n))) for n in names}
        for i, ln in enumerate((cell.ln1, cell.ln2)):
            params[f"ln{i}w"], params[f"ln{i}b"] = (
                jnp.asarray(_np(ln.weight)),
                jnp.asarray(_np(ln.bias)),
            )

        def apply(p, flat, x):
            z = flat.reshape(-1, t, d)
            q, k, v = jnp.moveaxis((z @ p["qkv"].T).reshape(-1, t, 3, heads, d // heads), 2, 0)
            logits = jnp.einsum("bqhe,bkhe->bhqk", q, k) / np.sqrt(d // heads)
            att = jnp.einsum("bhqk,bkhe->bqhe", jax.nn.softmax(logits, axis=-1), v)
            att = att.reshape(-1, t, d) @ p["out"].T
            h = _layer_norm(z + att + x.reshape(-1, t, d), p["ln0w"], p["ln0b"])
            out = _layer_norm(h + jax.nn.relu(h @ p["ff1"].T) @ p["ff2"].T, p["ln1w"], p["ln1b"])
            return out.reshape(flat.shape)

        x = x.reshape(b, t * d)
        z0 = jnp.zeros((b, t * d), jnp.float32)
    else:
        raise ValueError(f"JAX problems are a, b and d, not {key!r}")
    return apply, params, x, z0, prob
