"""Training tests run the tiny test model (tests/train/tiny_model.py) on one thread.

One thread: the step is a handful of tiny convolutions, and two OpenMP threads on a busy 2-core
machine are many times slower than one.
"""

from __future__ import annotations

import pytest
import tiny_model
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def recipe(tmp_path):
    return tiny_model.write_recipe(tmp_path / "tiny.yaml")
