"""The CPU tuning of the torch solvers, in one place.

Two measures, both for CPUs only (on other devices the solvers run plain device arithmetic):

* **Host bookkeeping.** The loop's per-sample bookkeeping (a few dozen operations on (B,)
  vectors) runs in NumPy after one device-to-host copy per iteration: on a CPU a PyTorch call on a
  tiny tensor costs 5–15 µs of dispatch, a sizeable fraction of one f-evaluation for a small cell.
  On a GPU that copy would be a synchronisation per iteration, so there the same bookkeeping runs
  on the device (:func:`bookkeeping`).
* **A buffer pool.** The first write to freshly allocated memory costs a page fault per 4 KiB
  page, a sizeable share of a solve for the (B, m, D) histories of Anderson and Broyden; history
  buffers handed back after a solve are reused by later ones, per thread, up to a bound.
  :func:`~deqkit.solvers.clear_buffer_pool` empties the pool,
  :func:`~deqkit.solvers.set_buffer_pool_limit` changes the bound (0 turns the pool off).
"""

from __future__ import annotations

import functools
import threading
import types
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .._compat import tensor_is_view
from .._validate import check_int
from ..core import stop_residual

__all__ = [
    "bookkeeping",
    "clear_buffer_pool",
    "float_limits",
    "history_buffer",
    "release",
    "set_buffer_pool_limit",
    "to_host",
]


@functools.cache
def float_limits(dtype: np.dtype) -> tuple[float, float]:
    """``(eps, tiny)`` of a NumPy float dtype, looked up once (``np.finfo`` on every solver step
    was measurable on small problems).

    >>> float_limits(np.dtype(np.float32))[0] == float(np.finfo(np.float32).eps)
    True
    """
    info = np.finfo(dtype)
    return float(info.eps), float(info.tiny)


_limit = {"bytes": 256 * 2**20}
_force_device = {"on": False}
_local = threading.local()


def host_side(device: torch.device) -> bool:
    """Whether the loop's bookkeeping for states on ``device`` runs in NumPy on the host
    (``_force_device`` lets tests run the device arithmetic on a CPU)."""
    return device.type == "cpu" and not _force_device["on"]


def to_host(vectors: Sequence[torch.Tensor]) -> np.ndarray:
    """Per-sample (B,) vectors as one (n, B) host array, in one device-to-host copy: detached,
    in their own dtype when float32/float64, float32 otherwise.

    >>> to_host([torch.ones(2), torch.zeros(2)]).tolist()
    [[1.0, 1.0], [0.0, 0.0]]
    """
    stacked = torch.stack(list(vectors)).detach()
    if stacked.dtype not in (torch.float32, torch.float64):
        stacked = stacked.float()
    return stacked.cpu().numpy()


def _numpy_to_device(values: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(values)).to(device)


#: The array operations the loop's bookkeeping uses: NumPy on the host (CPU states) ...
_NUMPY = types.SimpleNamespace(
    isfinite=np.isfinite,
    where=np.where,
    zeros_like=np.zeros_like,
    floor_tiny=lambda x: np.maximum(x, float_limits(x.dtype)[1]),
    ones_int=lambda n, device: np.ones(n, dtype=np.int64),
    stack=lambda xs: np.stack(xs, axis=1),
    to_device=_numpy_to_device,
)
#: ... and torch on the state's device (CUDA and others: no host copy per iteration).
_TORCH = types.SimpleNamespace(
    isfinite=torch.isfinite,
    where=torch.where,
    zeros_like=torch.zeros_like,
    floor_tiny=lambda x: x.clamp_min(torch.finfo(x.dtype).tiny),
    ones_int=lambda n, device: torch.ones(n, dtype=torch.int64, device=device),
    stack=lambda xs: torch.stack(xs, dim=1),
    to_device=lambda values, device: values,
)


def bookkeeping(device: torch.device) -> types.SimpleNamespace:
    """The namespace of array operations (NumPy or torch) the loop's bookkeeping uses."""
    return _NUMPY if host_side(device) else _TORCH


def norms(
    z: torch.Tensor, fz: torch.Tensor, diff: torch.Tensor | None = None, stop_mode: str = "rel"
) -> tuple[Any, Any, Any]:
    """Per-sample ``(‖f(z) − z‖, ‖f(z) − z‖ / ‖f(z)‖, the residual of stop_mode)``: host arrays
    from one device-to-host copy on a CPU, device tensors elsewhere. Computed in the state's
    dtype (float32 at least), like the solvers. ``diff``, when given, is ``fz − z`` already
    computed by the solver.

    >>> a, r, res = norms(torch.zeros(1, 2), torch.tensor([[3.0, 4.0]]), stop_mode="abs")
    >>> a.tolist(), r.tolist(), res.tolist()
    ([5.0], [1.0], [5.0])
    """
    # Called once per iteration: kept to few Python calls (no_grad entered only when needed).
    if torch.is_grad_enabled():
        with torch.no_grad():
            return norms(z, fz, diff, stop_mode)
    if diff is None:
        diff = fz - z
    abs_t, scale_t = _vector_norm(diff, dim=1), _vector_norm(fz, dim=1)
    if z.device.type != "cpu" or _force_device["on"]:
        if abs_t.dtype not in _HOST_DTYPES:
            abs_t, scale_t = abs_t.float(), scale_t.float()
        rel_t = abs_t / scale_t.clamp_min(torch.finfo(scale_t.dtype).tiny)
        res_t = rel_t if stop_mode == "rel" else stop_residual(stop_mode, abs_t, scale_t)
        return abs_t, rel_t, res_t
    stacked = torch.stack((abs_t, scale_t))
    if stacked.dtype not in _HOST_DTYPES:
        stacked = stacked.float()
    abs_res, scale = stacked.numpy()
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rel = abs_res / np.maximum(scale, float_limits(scale.dtype)[1])
        return abs_res, rel, rel if stop_mode == "rel" else stop_residual(stop_mode, abs_res, scale)


_vector_norm = torch.linalg.vector_norm
_HOST_DTYPES = (torch.float32, torch.float64)


def _pool() -> dict:
    if not hasattr(_local, "pool"):
        _local.pool = {}
    return _local.pool


def history_buffer(like: torch.Tensor, slots: int) -> torch.Tensor:
    """An uninitialised (B, slots, D) buffer for the history of the (B, D) iterate ``like``:
    one handed back by an earlier solve when the pool holds one (CPU, no autograd), else new.

    >>> with torch.no_grad():
    ...     a = history_buffer(torch.zeros(2, 3), 4)
    ...     release(a)
    ...     history_buffer(torch.zeros(2, 3), 4) is a
    True
    """
    shape = (like.shape[0], slots, like.shape[1])
    if host_side(like.device) and not torch.is_grad_enabled():
        buffers = _pool().get((shape, like.dtype, torch.is_inference_mode_enabled()))
        if buffers:
            return buffers.pop()
    return like.new_empty(shape)


def release(*buffers: torch.Tensor) -> None:
    """Hand history buffers back for reuse by later solves (CPU, no autograd history only).

    The caller promises that nothing else refers to them any more. Nothing is kept while autograd
    records (saved tensors may still view the buffers).
    """
    if torch.is_grad_enabled():
        return
    bound = _limit["bytes"]
    pool = _pool()
    for buf in buffers:
        if not host_side(buf.device) or buf.requires_grad or tensor_is_view(buf):
            continue
        if buf.nbytes > bound:
            continue
        held = sum(b.nbytes for kept in pool.values() for b in kept)
        if held + buf.nbytes > bound:  # make room the simple way: forget the rest
            pool.clear()
        key = (tuple(buf.shape), buf.dtype, buf.is_inference())
        pool.setdefault(key, []).append(buf)


def clear_buffer_pool() -> None:
    """Drop every history buffer this thread keeps for reuse by later CPU solves.

    >>> import deqkit as dk
    >>> dk.clear_buffer_pool()
    """
    _pool().clear()


def set_buffer_pool_limit(max_bytes: int) -> int:
    """Bound the bytes of history buffers kept for reuse per thread (0 turns the pool off);
    returns the previous bound (256 MiB by default).

    >>> import deqkit as dk
    >>> old = dk.set_buffer_pool_limit(0)  # no reuse: every solve allocates afresh
    >>> dk.set_buffer_pool_limit(old)
    0
    """
    check_int("max_bytes", max_bytes, minimum=0)
    previous, _limit["bytes"] = _limit["bytes"], int(max_bytes)
    if max_bytes == 0:
        clear_buffer_pool()
    return previous
