"""Training memory of a sequence model: bytes autograd saves for the backward, and peak bytes.

Saved-tensor bytes (unique storages packed by ``torch.autograd.graph.saved_tensors_hooks``
during the forward) are deterministic and are exactly the activation memory that grows with the
depth of an explicit network; a DEQ with an implicit backward saves one cell evaluation. The
peak of live tensor bytes comes from the profiler's allocator events over one step.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable

import torch

__all__ = ["peak_tensor_bytes", "saved_tensor_bytes"]


def saved_tensor_bytes(
    forward: Callable[[], torch.Tensor], exclude: Iterable[torch.Tensor] = ()
) -> int:
    """Bytes of the distinct storages autograd saves while ``forward()`` builds its loss.

    Storages of ``exclude`` (the model's parameters, which exist anyway) are not counted.

    >>> w = torch.ones(3, requires_grad=True)
    >>> saved_tensor_bytes(lambda: (w * torch.full((3,), 2.0)).sum(), exclude=[w])
    12
    """
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = forward()
    loss.backward()
    return sum(saved.values())


def peak_tensor_bytes(step: Callable[[], None]) -> int:
    """Peak of live tensor bytes allocated during ``step()`` (profiler memory events).

    >>> peak_tensor_bytes(lambda: torch.zeros(1000)) >= 4000
    True
    """
    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak
