"""Two toy problems defined only through the public task and dataset interfaces, outside the
package: a vector regression and a character language model, each with its DEQ model.

Recipes name them by path: ``model.name: toy_tasks:build_regressor``, ``task.name:
toy_tasks:ToyRegression``, ``data.name: toy_tasks:REGRESSION``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

import deqkit as dk
from deqkit.data import DataSource, DataSplits, split_validation
from deqkit.train.task import Best, Task

# --- regression: y = (sin(a.x), cos(b.x)) from 4 features ------------------------------------


class VectorSet:
    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def batch(self, index, generator=None):
        return self.x[index], self.y[index]

    def subset(self, index):
        return VectorSet(self.x[index], self.y[index])


@dataclass(frozen=True)
class RegressionOptions:
    n: int = 256


def _regression(opts: RegressionOptions, ctx) -> DataSplits:
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(opts.n + 64, 4, generator=gen)
    y = torch.stack([torch.sin(x @ torch.tensor([1.0, -0.5, 0.3, 0.2])), torch.cos(x[:, 0])], 1)
    train, test = VectorSet(x[: opts.n], y[: opts.n]), VectorSet(x[opts.n :], y[opts.n :])
    val = None
    if ctx.val_fraction:
        val_index, train_index = split_validation(len(train), ctx.val_fraction, ctx.seed)
        val, train = train.subset(val_index), train.subset(train_index)
    return DataSplits(train=train, test=test, val=val, info={"features": 4, "outputs": 2})


REGRESSION = DataSource(_regression, RegressionOptions, description="toy vector regression")


class ToyRegression(Task):
    name = "toy_regression"
    best = Best("mse", "min")

    def criterion(self, output, targets):
        return nn.functional.mse_loss(output, targets)

    def metrics(self):
        from torchmetrics import MeanSquaredError

        return {"mse": MeanSquaredError()}

    def pictures(self, inputs, targets, output):
        from deqkit.plot import side_by_side

        scale = lambda t: (t[:16].detach() + 1.5) / 3.0  # noqa: E731  (values in about ±1.5)
        return {"fit": side_by_side(scale(self.final(output)), scale(targets))}


class Cell(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.lin = nn.Linear(width, width)

    def forward(self, z, x):
        return torch.tanh(0.6 * self.lin(z) + x)


class Regressor(nn.Module):
    def __init__(self, features, outputs, width, deq_options, skip=False):
        super().__init__()
        self.inject = nn.Linear(features, width)
        init = nn.Linear(width, width) if skip else None  # Skip-DEQ: z0 proposed from x
        self.deq = dk.DEQ(Cell(width), init=init, **deq_options)
        self.head = nn.Linear(width, outputs)

    def forward(self, x):
        z, sol = self.deq(self.inject(x))
        states = sol.outputs.states
        if states is not None and len(states) > 1:
            return [self.head(s) for s in states], sol
        return self.head(z), sol


def build_regressor(model_cfg, deq_options, data_info):
    width, skip = model_cfg.get("width", 16), model_cfg.get("skip", False)
    return Regressor(data_info["features"], data_info["outputs"], width, deq_options, skip)


class Exploding(nn.Module):
    """z -> 3 z + x: the fixed-point iteration diverges (a solver failure, not a NaN)."""

    def __init__(self, width):
        super().__init__()
        self.inject = nn.Linear(4, width)
        self.deq = dk.DEQ(lambda z, x: 3.0 * z + x, **{**DEQ_DIVERGES, "on_failure": "ignore"})
        self.head = nn.Linear(width, 2)

    def forward(self, x):
        z, sol = self.deq(self.inject(x))
        return self.head(z.clamp(-1, 1)), sol


DEQ_DIVERGES = {"solver": "fixed_point", "tol": 1e-6, "max_iter": 60}


def build_exploding(model_cfg, deq_options, data_info):
    return Exploding(model_cfg.get("width", 8))


TASK = "toy_tasks:ToyRegression"

# --- character language model on a fixed text ------------------------------------------------

TEXT = "the quick brown fox jumps over the lazy dog. " * 12


class Windows:
    def __init__(self, ids: torch.Tensor, length: int):
        self.ids, self.length = ids, length

    def __len__(self):
        return len(self.ids) - self.length - 1

    def batch(self, index, generator=None):
        rows = index[:, None] + torch.arange(self.length + 1)
        chunk = self.ids[rows]
        return chunk[:, :-1], chunk[:, 1:]


@dataclass(frozen=True)
class CharOptions:
    seq_len: int = 12


def _chars(opts: CharOptions, ctx) -> DataSplits:
    if ctx.val_fraction:
        raise ValueError("the toy text has no validation split")
    vocab = sorted(set(TEXT))
    ids = torch.tensor([vocab.index(c) for c in TEXT])
    cut = int(0.8 * len(ids))
    info = {"vocab_size": len(vocab)}
    return DataSplits(Windows(ids[:cut], opts.seq_len), Windows(ids[cut:], opts.seq_len), info)


CHARS = DataSource(_chars, CharOptions, description="toy character text")


class ToyCharLM(Task):
    name = "toy_char_lm"
    best = Best("bpc", "min")

    def criterion(self, output, targets):
        return nn.functional.cross_entropy(output.flatten(0, 1), targets.flatten())

    def metrics(self):
        from torchmetrics import MeanMetric

        class BitsPerChar(MeanMetric):
            def update(self, logits, target):
                nll = nn.functional.cross_entropy(
                    logits.flatten(0, 1), target.flatten(), reduction="none"
                )
                super().update(nll / math.log(2.0))

        return {"bpc": BitsPerChar()}

    def count(self, inputs, targets):
        return targets.numel()


class CharModel(nn.Module):
    def __init__(self, vocab, width, deq_options):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.deq = dk.DEQ(Cell(width), **deq_options)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens):
        e = self.embed(tokens)  # (B, T, W): each position is its own equilibrium
        z, sol = self.deq(e.flatten(0, 1))
        return self.head(z).view(*tokens.shape, -1), sol


def build_char_model(model_cfg, deq_options, data_info):
    return CharModel(data_info["vocab_size"], model_cfg.get("width", 16), deq_options)


def recipe(kind: str, **sections) -> dict:
    """A tiny recipe for ``kind`` "regression" or "chars" (``sections`` merged in)."""
    base = {
        "regression": {
            "model": {"name": "toy_tasks:build_regressor", "width": 16},
            "task": {"name": "toy_tasks:ToyRegression"},
            "data": {"name": "toy_tasks:REGRESSION", "batch_size": 32},
        },
        "chars": {
            "model": {"name": "toy_tasks:build_char_model", "width": 16},
            "task": {"name": "toy_tasks:ToyCharLM"},
            "data": {"name": "toy_tasks:CHARS", "batch_size": 16},
        },
    }[kind]
    raw = {
        **base,
        "deq": {"solver": "anderson", "tol": 1.0e-4, "max_iter": 12, "on_failure": "ignore"},
        "optim": {"name": "adam", "lr": 1.0e-2},
        "train": {"steps": 6, "eval_every": 3, "checkpoint_every": 3, "log_every": 1},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return raw


def write(path, kind: str, **sections) -> str:
    import yaml

    with open(path, "w") as fh:
        yaml.safe_dump(recipe(kind, **sections), fh)
    return str(path)
