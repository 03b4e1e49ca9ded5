"""Every private PyTorch API deqkit relies on, in one place (tests/test_compat.py checks each).

PyTorch has no public pytree module (as of 2.13 ``torch.utils._pytree`` is the one its own
libraries use), no public class for the weight- and spectral-norm parametrizations, and no public
predicate for "this tensor is a view", no public setter for the learning rate an LR scheduler
reports, and no public test for "this tensor is wrapped by a torch.func transform". Each is wrapped here so that a PyTorch release that moves
one breaks one line, found by one test.
"""

from __future__ import annotations

import torch
from torch.nn.utils import parametrizations as _parametrizations
from torch.utils import _pytree as pytree

__all__ = [
    "NORM_PARAMETRIZATIONS",
    "is_functorch_wrapped",
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
    >>> torch.func.vmap(lambda t: torch.tensor(is_functorch_wrapped(t)))(torch.zeros(2)).all().item()
    True
    """
    return bool(torch._C._functorch.is_functorch_wrapped_tensor(tensor))
