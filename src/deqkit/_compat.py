"""Every private PyTorch API deqkit relies on, in one place (tests/test_compat.py checks each).

PyTorch has no public pytree module (as of 2.13 ``torch.utils._pytree`` is the one its own
libraries use), no public class for the weight- and spectral-norm parametrizations, and no public
predicate for "this tensor is a view", no public setter for the learning rate an LR scheduler
reports, no public test for "this tensor is wrapped by a torch.func transform", and no public
order of autograd graph nodes. Each is wrapped here so that a PyTorch release that moves
one breaks one line, found by one test.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn.utils import parametrizations as _parametrizations
from torch.utils import _pytree as pytree

__all__ = [
    "NORM_PARAMETRIZATIONS",
    "is_functorch_wrapped",
    "next_sequence_nr",
    "node_sequence_nr",
    "pytree",
    "set_scheduler_last_lr",
    "tensor_is_view",
]

#: The parametrization classes behind ``parametrizations.weight_norm`` and ``spectral_norm``.
NORM_PARAMETRIZATIONS: tuple[type, ...] = (
    _parametrizations._WeightNorm,
    _parametrizations._SpectralNorm,
)


def tensor_is_view(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` shares storage as a view of another tensor.

    >>> t = torch.zeros(2, 3)
    >>> tensor_is_view(t), tensor_is_view(t[0])
    (False, True)
    """
    return tensor._base is not None


def set_scheduler_last_lr(scheduler: torch.optim.lr_scheduler.LRScheduler, lrs: list) -> None:
    """Make ``scheduler.get_last_lr()`` report ``lrs`` (after setting the groups' rates by hand).

    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    >>> sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    >>> set_scheduler_last_lr(sched, [0.5])
    >>> sched.get_last_lr()
    [0.5]
    """
    scheduler._last_lr = list(lrs)


def is_functorch_wrapped(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is wrapped by a ``torch.func`` transform (grad, vmap, jvp, ...).

    >>> is_functorch_wrapped(torch.zeros(2))
    False
    >>> seen = []
    >>> _ = torch.func.vmap(lambda t: seen.append(is_functorch_wrapped(t)) or t)(torch.zeros(2))
    >>> seen
    [True]
    """
    return bool(torch._C._functorch.is_functorch_wrapped_tensor(tensor))


def node_sequence_nr(node: Any) -> int:
    """The creation order of an autograd graph node (``grad_fn``), increasing per thread.

    >>> a = torch.zeros(1, requires_grad=True)
    >>> node_sequence_nr((a * 2).grad_fn) < node_sequence_nr((a * 3).grad_fn)
    True
    """
    return int(node._sequence_nr())


def next_sequence_nr() -> int:
    """A sequence number no earlier node has: every node created after this call has one at
    least as large (it makes one throw-away node, with grad mode on)."""
    with torch.enable_grad():
        return node_sequence_nr((torch.zeros((), requires_grad=True) * 1).grad_fn)
