"""What the trainer does to the DEQ layers of a model it does not know: find them, switch
unrolled pretraining (``DEQ.pretrain``), vary the forward budget, trace residuals
(``DEQ.tracing``), warm-start from a cache, compile their cells. Every touch of a layer's
settings is in this one module.

>>> import torch, deqkit as dk
>>> model = torch.nn.Sequential(dk.DEQ(lambda z, x: 0.5 * z + x, max_iter=10))
>>> layers = DEQLayers(model)
>>> with layers.budget(3):
...     _, sol = model(torch.ones(2, 1))
>>> int(sol.nstep.max()), layers.layers[0].max_iter
(3, 10)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

import deqkit as dk

__all__ = ["DEQLayers", "WarmStart"]


class DEQLayers:
    """The ``dk.DEQ`` modules of ``model``, in module order."""

    def __init__(self, model: nn.Module):
        self.layers: list[dk.DEQ] = [m for m in model.modules() if isinstance(m, dk.DEQ)]

    def __bool__(self) -> bool:
        return bool(self.layers)

    def pretrain(self, steps: int) -> None:
        """Unroll every layer ``steps`` times instead of solving (0: solve)."""
        for layer in self.layers:
            layer.pretrain(steps)

    @contextlib.contextmanager
    def budget(self, max_iter: int) -> Iterator[None]:
        """Training solves capped at ``max_iter`` inside the block (see :meth:`DEQ.budget`)."""
        with contextlib.ExitStack() as stack:
            for layer in self.layers:
                stack.enter_context(layer.budget(max_iter))
            yield

    @contextlib.contextmanager
    def tracing(self) -> Iterator[None]:
        """Per-iteration residuals recorded in ``sol.trace`` inside the block."""
        with contextlib.ExitStack() as stack:
            for layer in self.layers:
                stack.enter_context(layer.tracing())
            yield

    def compile(self) -> None:
        """``torch.compile`` every layer's cell in place (state-dict keys unchanged)."""
        for layer in self.layers:
            if isinstance(layer.cell, nn.Module):
                layer.cell.compile()


class WarmStart:
    """Warm starts keyed by sample index: each solve of the first DEQ layer starts from the
    sample's last fixed point (``dk.FixedPointCache``), unseen samples from the layer's usual
    initial state. Set :attr:`index` to the batch's sample indices before each forward.

    Works through forward hooks, so the model's code needs nothing: the layer must be called
    once per forward with a batch whose dim 0 is the samples of ``index``.

    >>> deq = dk.DEQ(lambda z, x: 0.5 * z + x, tol=1e-6, max_iter=100)
    >>> warm = WarmStart(deq, size=4)
    >>> warm.index = torch.tensor([0, 1])
    >>> _, cold = deq(torch.ones(2, 1))
    >>> _, hot = deq(torch.ones(2, 1))          # starts from the stored fixed points
    >>> int(cold.nstep.max()) > int(hot.nstep.max())
    True
    """

    def __init__(self, layer: dk.DEQ, size: int):
        self.cache = dk.FixedPointCache(size)
        self.index: torch.Tensor | None = None
        self._hooks = [
            layer.register_forward_pre_hook(self._before, with_kwargs=True),
            layer.register_forward_hook(self._after),
        ]
        self.layer = layer

    def _before(self, module: dk.DEQ, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if self.index is None or not module.training or kwargs.get("z0") is not None:
            return None
        default = module.initial_state(args[0])
        kwargs = {**kwargs, "z0": self.cache.get(self.index, default=default)}
        return args, kwargs

    def _after(self, module: dk.DEQ, args: tuple, output: Any) -> None:
        if self.index is not None and module.training:
            self.cache.put(self.index, output[0])

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()
