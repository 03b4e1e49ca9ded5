"""The JAX examples run end to end (short versions) and learn."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

JAX_X64 = False  # the examples are float32 programs
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str):
    if str(EXAMPLES) not in sys.path:  # as when a script runs: its folder is importable
        sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["jax_haiku", "jax_flax", "jax_equinox"])
def test_classifier_examples_learn(name):
    out = load(name).main(steps=60, batch=128)
    losses = np.asarray(out["losses"])
    assert np.isfinite(losses).all()
    assert losses[-10:].mean() < 0.6 * losses[0]
    assert out["accuracy"] > 0.8
    assert out["status"] == 0  # CONVERGED on the test set


def test_transformer_example_short():
    out = load("jax_transformer").main(
        steps=8,
        batch=8,
        seq_len=16,
        width=16,
        heads=2,
        max_iter=6,
        eval_batches=0,
        lr=1e-2,
        solver="fixed_point",
    )
    losses = np.asarray(out["losses"])
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0]
    assert 3.0 < out["baseline"] < 3.5  # unigram entropy of the help texts, nats per character
