"""The per-step forward budget (``train.budget_delta``): it caps the training solves only inside
the step, comes back after an error, and a recipe whose budgets cannot hold ``deq.n_states``
states is refused when it is loaded, not at the step that draws a small budget."""

from __future__ import annotations

import pytest
import torch

import deqkit as dk
from deqkit.train.errors import ConfigError
from deqkit.train.layers import DEQLayers
from deqkit.train.recipe import load_config


def _cell(z, x):
    return 0.9 * z + x


def test_budget_caps_inside_the_block_and_restores_after_an_error():
    # Plain fixed-point iteration on a contraction by 0.9: 20 steps stay far above tol 1e-12.
    deq = dk.DEQ(_cell, "fixed_point", tol=1e-12, max_iter=20, on_failure="ignore")
    model = torch.nn.Sequential(deq)
    layers = DEQLayers(model)
    with pytest.raises(RuntimeError, match="inside"):
        with layers.budget(3):
            _, sol = model(torch.ones(2, 1))
            assert sol.nstep.tolist() == [3, 3]
            raise RuntimeError("inside")
    _, sol = model(torch.ones(2, 1))
    assert sol.nstep.tolist() == [20, 20] and layers.layers[0].max_iter == 20


def test_budgets_below_n_states_are_refused_at_load(recipe):
    base = ["deq.max_iter=4"]
    with pytest.raises(ConfigError, match=r"deq.n_states=3 exceeds the smallest training budget 2"):
        load_config(recipe, [*base, "deq.n_states=3", "train.budget_delta=2"])
    assert load_config(recipe, [*base, "deq.n_states=2", "train.budget_delta=2"]).deq.n_states == 2
    with pytest.raises(ConfigError, match=r"deq.n_states=3 exceeds train.pretrain_unroll=2"):
        load_config(
            recipe, [*base, "deq.n_states=3", "train.pretrain_steps=1", "train.pretrain_unroll=2"]
        )
